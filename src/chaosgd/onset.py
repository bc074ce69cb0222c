"""The onset of chaos: the smallest learning rate at which sensitivity to initial conditions is fully developed.

The paper (its closing paragraphs) proposes locating, before training, the learning rate where p — the percentage of
initial conditions with a positive local exponent — goes from 0 to about 100 %, because training is fastest there,
by bisection on an initial range [eta_min, eta_max] with p(eta_min) = 0 and p(eta_max) ~ 100 %. Here the search runs
on log eta: it brackets the onset (widening the range by factors of 10 if needed), then bisects until the bracket's
relative width is below ``rel_width``. Each evaluation only trains for the first epochs, which the exponential phase
occupies. Learning rates whose reference networks mostly diverge are beyond the useful range: they bound the bracket
from above but are never suggested; so do those where exponents too fast for the records (``n_unresolved``) leave
open whether p reaches p_high.

Confidence: every p comes with a Wilson interval at the evaluator's confidence level. A learning rate whose interval
still contains p_high is undecided; with ``max_initial`` the search trains more initial conditions there (doubling,
up to ``max_initial``) until the interval lies on one side, so that the final bracket holds at that confidence
(``Onset.confident``). With ``parallel = k`` the bracket is cut by k learning rates at once (multisection), whose
evaluations run side by side (``Evaluator.many``). This module is the bisection alone, over any ``evaluate``
(``chaosgd.evaluation``); ``chaosgd.sweetspot`` uses it to refine the onset that its scan brackets, beside the
learning rate it recommends. The evaluators of configurations and of users' models are in
``chaosgd.experiments.search``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from chaosgd.defaults import CONFIDENCE, P_HIGH
from chaosgd.evaluation import Evaluation
from chaosgd.precision import float64


@dataclass(frozen=True)
class Onset:
    """The onset: the smallest learning rate with p >= p_high found (``eta``), the final bracket [low, high] and
    every evaluation."""

    eta: float
    low: float
    high: float
    evaluations: tuple[Evaluation, ...] = field(default=())
    diverging_edge: bool = False  # p never reached p_high below the learning rates that diverge (or where p is
    # left open by unresolved exponents: Evaluation.open); eta is NaN
    p_high_reached: bool = True  # False: p stayed below p_high; eta is then the learning rate of the highest p
    confident: bool = False  # both ends of the bracket are decided at the evaluations' confidence level
    # (With max_initial the ends are always decided; the bracket may then stay wider than rel_width where p is
    # too close to p_high to tell apart with that many initial conditions.)

    @property
    def network_epochs(self) -> int:
        return sum(e.network_epochs for e in self.evaluations if not e.stored)


PARALLEL_MAX = 64  # learning rates a search round may evaluate at once


def check_search(*, eta_min: float, eta_max: float, p_high: float = P_HIGH, rel_width: float = 0.1, parallel: int = 1,
                 max_initial: int | None = None, n_initial: int | None = None, confidence: float = CONFIDENCE) -> None:
    """Refuse search settings that cannot work, before anything is computed; each message names the setting."""
    if not (math.isfinite(eta_min) and math.isfinite(eta_max) and 0 < eta_min < eta_max):
        raise ValueError(f"eta_min and eta_max: need 0 < eta_min < eta_max, both finite; got {eta_min}, {eta_max}")
    if not 0 < p_high < 100:
        raise ValueError(f"p_high: the p (%) that counts as developed must be in (0, 100); got {p_high}")
    if not (math.isfinite(rel_width) and rel_width > 0):
        raise ValueError(f"rel_width must be a finite number > 0; got {rel_width}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: the level of the Wilson intervals must be in (0, 1); got {confidence}")
    if int(parallel) != parallel or not 1 <= parallel <= PARALLEL_MAX:
        raise ValueError(f"parallel must be an integer in [1, {PARALLEL_MAX}] (learning rates evaluated at once; "
                         f"more would each cut the bracket finer than any search needs); got {parallel}")
    if max_initial is not None and (int(max_initial) != max_initial or max_initial < 1):
        raise ValueError(f"max_initial must be an integer >= 1 or None; got {max_initial}")
    if max_initial is not None and n_initial is not None and max_initial < n_initial:
        raise ValueError(f"max_initial ({max_initial}) is below the initial conditions of one evaluation "
                         f"({n_initial}): it could never add any")


WIDEN_UP = 2  # decades above eta_max tried before answering with the highest p instead of an onset


def _highest_p(done: dict[float, Evaluation]) -> Onset:
    """The answer when p never reaches p_high: the smallest learning rate of the highest p among those that do not
    diverge, bracketed by its evaluated neighbours."""
    evaluations = tuple(sorted(done.values(), key=lambda e: e.eta))
    # Never empty: the search only gives up widening at a learning rate that does not diverge.
    best = max((e for e in evaluations if not e.diverges), key=lambda e: e.p)
    k = evaluations.index(best)
    low, high = evaluations[max(k - 1, 0)].eta, evaluations[min(k + 1, len(evaluations) - 1)].eta
    return Onset(best.eta, low, high, evaluations, p_high_reached=False)


@float64
def find_onset(evaluate: Callable[[float], Evaluation], *, eta_min: float, eta_max: float,
                    p_high: float = P_HIGH, rel_width: float = 0.1, max_evaluations: int = 30,
                    known: dict[float, Evaluation] | None = None, parallel: int = 1,
                    max_initial: int | None = None) -> Onset:
    """Bracket and bisect (on log eta) the smallest eta with p >= ``p_high`` and no divergence.

    When p stays below ``p_high`` up to ``WIDEN_UP`` decades above ``eta_max``, the answer is the learning rate of
    the highest p measured (``Onset.p_high_reached`` is False): where sensitivity is most developed.

    ``evaluate(eta)`` measures p (an ``Evaluator``, or any function returning an ``Evaluation``); ``known`` holds
    evaluations already made (a sweep's store), used before computing anything: the initial bracket is tightened to
    the known points around the onset. ``parallel``: learning rates per round once the onset is bracketed (k cuts
    shrink the bracket (k + 1)-fold; ``evaluate.many`` runs them side by side). ``max_initial``: train more initial
    conditions where p's interval contains p_high, up to this many (needs an ``Evaluator``; stored points are kept
    as they are).
    """
    check_search(eta_min=eta_min, eta_max=eta_max, p_high=p_high, rel_width=rel_width, parallel=parallel,
                 max_initial=max_initial, n_initial=getattr(evaluate, "n_initial", None))
    if max_initial is not None and not hasattr(evaluate, "extend"):
        raise ValueError("max_initial needs an Evaluator (config_evaluator, model_evaluator or a subclass), which can "
                         "train more initial conditions at a learning rate")
    done: dict[float, Evaluation] = dict(known or {})

    def firm(e: Evaluation) -> Evaluation:
        """More initial conditions until p's interval is on one side of p_high, or max_initial is reached."""
        while (max_initial is not None and not e.stored and not e.decided(p_high)
               and evaluate.initial(e.eta) < max_initial):
            e = evaluate.extend(e.eta, min(evaluate.initial(e.eta), max_initial - evaluate.initial(e.eta)))
        return e

    def at_all(etas):
        new = [eta for eta in dict.fromkeys(etas) if eta not in done]
        if new:
            if sum(not e.stored for e in done.values()) + len(new) > max_evaluations:
                raise RuntimeError(f"no bracket of relative width {rel_width} after {max_evaluations} evaluations")
            results = evaluate.many(new) if len(new) > 1 and hasattr(evaluate, "many") else map(evaluate, new)
            for eta, e in zip(new, results):
                done[eta] = firm(e)
        return [done[eta] for eta in etas]

    def at(eta):
        return at_all([eta])[0]

    def high_side(e: Evaluation) -> bool:
        return e.diverges or e.open(p_high) or e.developed(p_high)

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
    for _ in range(WIDEN_UP + 1):  # widen upwards until the high end is developed (or diverging)
        if high_side(at(high)):
            break
        low, high = high, high * 10
    else:
        return _highest_p(done)
    while high / low - 1 > rel_width:
        # k cuts, evenly spaced on log eta; the new bracket is the first low-to-high step among them. With
        # max_initial, only points decided at the confidence level may become an end: when no cut is, the onset is
        # resolved as finely as max_initial initial conditions allow, and the search stops there.
        cuts = [low * (high / low) ** (i / (parallel + 1)) for i in range(1, parallel + 1)]
        inner = at_all(cuts)
        if max_initial is not None:
            inner = [e for e in inner if e.decided(p_high)]
            if not inner:
                break
        points = [done[low]] + inner + [done[high]]
        step = next(i for i in range(1, len(points)) if high_side(points[i]))
        low, high = points[step - 1].eta, points[step].eta
    developed = [e for e in done.values() if low <= e.eta <= high and e.developed(p_high) and not e.diverges]
    evaluations = tuple(sorted(done.values(), key=lambda e: e.eta))
    confident = done[low].decided(p_high) and done[high].decided(p_high)
    if not developed:  # the bracket closed on the start of divergence (or of unresolved p), not on developed chaos
        return Onset(math.nan, float(low), float(high), evaluations, diverging_edge=True, confident=confident)
    return Onset(float(min(e.eta for e in developed)), float(low), float(high), evaluations,
                     confident=confident)
