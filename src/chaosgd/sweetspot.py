"""Find the edge of chaos: the smallest learning rate at which sensitivity to initial conditions is fully developed.

The paper (its closing paragraphs) proposes locating, before training, the learning rate where p — the percentage of
initial conditions with a positive local exponent — goes from 0 to about 100 %, because training is fastest there,
by bisection on an initial range [eta_min, eta_max] with p(eta_min) = 0 and p(eta_max) ~ 100 %. Here the search runs
on log eta: it brackets the onset (widening the range by factors of 10 if needed), then bisects until the bracket's
relative width is below ``rel_width``. Each evaluation only trains for the first epochs, which the exponential phase
occupies. Learning rates whose reference networks mostly diverge are beyond the useful range: they bound the bracket
from above but are never suggested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable

from chaosgd.lyapunov import network_exponent


@dataclass(frozen=True)
class Evaluation:
    """p at one learning rate, with a Wilson confidence interval, lambda_NMLE and the fraction that diverged."""

    eta: float
    p: float
    ci_low: float
    ci_high: float
    n: int
    lambda_nmle: float
    diverged_fraction: float
    network_epochs: int
    stored: bool = False  # taken from a sweep's store instead of computed

    def developed(self, p_high: float) -> bool:
        return self.p >= p_high

    @property
    def diverges(self) -> bool:
        return self.diverged_fraction > 0.5


@dataclass(frozen=True)
class SweetSpot:
    """The suggested learning rate and the evidence: every evaluation, and the final bracket [low, high]."""

    eta: float
    low: float
    high: float
    evaluations: tuple[Evaluation, ...] = field(default=())
    diverging_edge: bool = False  # p never reached p_high below the learning rates that diverge; eta is NaN

    @property
    def network_epochs(self) -> int:
        return sum(e.network_epochs for e in self.evaluations if not e.stored)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n, in percent."""
    if n == 0:
        return 0.0, 100.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def evaluation_from_records(records, eta: float, *, confidence: float = 0.95, stored: bool = False,
                            **fit) -> Evaluation:
    """An ``Evaluation`` from engine records of one learning rate (``fit``: r2_min, lambda_min, plateau)."""
    net = network_exponent(records.distance, stopped_at=records.copies_stopped_at, **fit)
    low, high = wilson_interval(sum(f.positive for f in net.local), net.n_fitted, confidence)
    return Evaluation(float(eta), float(net.p) if net.n_fitted else 0.0, low, high, net.n_fitted, net.mean,
                      float((records.diverged_at[:, 0] >= 0).mean()), records.network_epochs, stored)


def find_sweet_spot(evaluate: Callable[[float], Evaluation], *, eta_min: float, eta_max: float,
                    p_high: float = 95.0, rel_width: float = 0.1, max_evaluations: int = 30,
                    known: dict[float, Evaluation] | None = None) -> SweetSpot:
    """Bracket and bisect (on log eta) the smallest eta with p >= ``p_high`` and no divergence.

    ``evaluate(eta)`` measures p; ``known`` holds evaluations already made (a sweep's store), used before computing
    anything: the initial bracket is tightened to the known points around the onset.
    """
    if not 0 < eta_min < eta_max:
        raise ValueError(f"need 0 < eta_min < eta_max; got {eta_min}, {eta_max}")
    if not 0 < rel_width:
        raise ValueError(f"rel_width must be > 0; got {rel_width}")
    done: dict[float, Evaluation] = dict(known or {})

    def at(eta):
        if eta not in done:
            if sum(not e.stored for e in done.values()) >= max_evaluations:
                raise RuntimeError(f"no bracket of relative width {rel_width} after {max_evaluations} evaluations")
            done[eta] = evaluate(eta)
        return done[eta]

    def high_side(e: Evaluation) -> bool:
        return e.diverges or e.developed(p_high)

    # Start from what is known, if it already brackets an onset: the first step from a low to a high point.
    ordered = sorted(done.values(), key=lambda e: e.eta)
    crossings = [(a.eta, b.eta) for a, b in zip(ordered, ordered[1:]) if not high_side(a) and high_side(b)]
    low, high = crossings[0] if crossings else (eta_min, eta_max)
    for _ in range(6):  # widen downwards until p is below p_high at the low end
        if not high_side(at(low)):
            break
        high, low = low, low / 10
    else:
        raise RuntimeError(f"p >= {p_high}% already at eta = {low * 10:g}: no onset found above it")
    if not high_side(at(high)):
        # p(eta) need not be monotonic (it can rise and fall again before divergence): look at one learning rate a
        # decade inside the range before widening it.
        decade = low * 10
        while decade < high and not high_side(at(decade)):
            low, decade = decade, decade * 10
        if decade < high:
            high = decade
    for _ in range(6):  # widen upwards until the high end is developed (or diverging)
        if high_side(at(high)):
            break
        low, high = high, high * 10
    else:
        best = max(done.values(), key=lambda e: e.p)
        raise RuntimeError(f"p < {p_high}% up to eta = {high / 10:g}: no onset found below it (the highest p "
                           f"measured was {best.p:.0f}% at eta = {best.eta:g}; a lower p_high finds where it rises)")
    while high / low - 1 > rel_width:
        mid = math.sqrt(low * high)
        if high_side(at(mid)):
            high = mid
        else:
            low = mid
    developed = [e for e in done.values() if low <= e.eta <= high and e.developed(p_high) and not e.diverges]
    evaluations = tuple(sorted(done.values(), key=lambda e: e.eta))
    if not developed:  # the bracket closed on the start of divergence, not on developed chaos
        return SweetSpot(math.nan, float(low), float(high), evaluations, diverging_edge=True)
    return SweetSpot(float(min(e.eta for e in developed)), float(low), float(high), evaluations)


def config_evaluator(config, *, epochs: int = 60, confidence: float = 0.95) -> Callable[[float], Evaluation]:
    """``evaluate(eta)`` for a sweep configuration: its model, data and ensemble, trained for ``epochs`` only."""
    from chaosgd.sweep import Task, run_task

    short = config.with_values(**{"training.epochs": int(epochs), "training.stop_copies": False})

    def evaluate(eta: float) -> Evaluation:
        records = run_task(short, Task(0, float(eta), 0, short.ensemble.initial))
        return evaluation_from_records(records, eta, confidence=confidence, r2_min=config.analysis.r2_min,
                                       lambda_min=config.analysis.lambda_min, plateau=config.analysis.plateau)

    return evaluate


def stored_evaluations(run_dir, *, confidence: float = 0.95) -> dict[float, Evaluation]:
    """Evaluations of every finished learning rate of a sweep's run folder, marked as stored."""
    from pathlib import Path

    from chaosgd.config import Config
    from chaosgd.sweep import load_records, pending

    run_dir = Path(run_dir)
    config = Config.load(run_dir / "config.toml")
    unfinished = {t.eta_index for t in pending(config, run_dir)}
    return {eta: evaluation_from_records(load_records(run_dir, k), eta, confidence=confidence, stored=True,
                                         r2_min=config.analysis.r2_min, lambda_min=config.analysis.lambda_min,
                                         plateau=config.analysis.plateau)
            for k, eta in enumerate(config.training.etas) if k not in unfinished}


def model_evaluator(model, data, *, n_initial: int = 10, n_copies: int = 3, epsilon: float = 1e-8,
                    epochs: int = 60, seed: int = 0, l2: float = 0.0, confidence: float = 0.95,
                    **fit) -> Callable[[float], Evaluation]:
    """``evaluate(eta)`` for any model with ``init(key)`` and ``apply(params, x)`` (see ``models.FunctionModel``)
    and the user's own arrays ``data = {"x_train", "y_train", "x_test", "y_test"}``."""
    from chaosgd.engine import run
    from chaosgd.ensemble import epsilon_ball, initial_conditions
    from chaosgd.objective import classification

    ball = epsilon_ball(initial_conditions(model, n_initial, seed=seed), n_copies, epsilon=epsilon, seed=seed)
    objective = classification(model, l2=l2)

    def evaluate(eta: float) -> Evaluation:
        records = run(objective, ball, eta, data, epochs=epochs)
        return evaluation_from_records(records, eta, confidence=confidence, **fit)

    return evaluate
