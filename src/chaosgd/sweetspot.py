"""Find the edge of chaos: the smallest learning rate at which sensitivity to initial conditions is fully developed.

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
(``SweetSpot.confident``). With ``parallel = k`` the bracket is cut by k learning rates at once (multisection), whose
evaluations run side by side (``Evaluator.many``). This module is the search alone, over any ``evaluate``; the
evaluators of configurations and of users' models are in ``chaosgd.experiments.search``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
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
    n_unresolved: int = 0  # local exponents too fast for the records: not in p, not in n

    def p_range(self) -> tuple[float, float]:
        """The lowest and the highest p that the unresolved exponents allow (each might count as positive or not);
        both are p when every exponent is resolved."""
        if not self.n_unresolved:
            return self.p, self.p
        positive = round(self.p * self.n / 100) if self.n else 0
        total = self.n + self.n_unresolved
        return 100 * positive / total, 100 * (positive + self.n_unresolved) / total

    def developed(self, p_high: float) -> bool:
        """p >= p_high, whatever the unresolved exponents are."""
        return self.p_range()[0] >= p_high

    def open(self, p_high: float) -> bool:
        """Whether p >= p_high depends on the unresolved exponents: the records cannot tell. Like a learning rate
        that diverges, such a point bounds the search from above and is never suggested."""
        low, high = self.p_range()
        return low < p_high <= high

    def decided(self, p_high: float) -> bool:
        """The interval lies on one side of p_high (or the references diverge), and so do the unresolved."""
        return self.diverges or (not self.open(p_high) and (self.ci_high < p_high or self.ci_low >= p_high))

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
    diverging_edge: bool = False  # p never reached p_high below the learning rates that diverge (or where p is
    # left open by unresolved exponents: Evaluation.open); eta is NaN
    p_high_reached: bool = True  # False: p stayed below p_high; eta is then the learning rate of the highest p
    confident: bool = False  # both ends of the bracket are decided at the evaluations' confidence level
    # (With max_initial the ends are always decided; the bracket may then stay wider than rel_width where p is
    # too close to p_high to tell apart with that many initial conditions.)

    @property
    def network_epochs(self) -> int:
        return sum(e.network_epochs for e in self.evaluations if not e.stored)


def evaluation_from_records(records, eta: float, *, confidence: float = 0.95, stored: bool = False,
                            **fit) -> Evaluation:
    """An ``Evaluation`` from engine records of one learning rate (``fit``: r2_min, lambda_min, plateau)."""
    net = network_exponent(records.distance, stopped_at=records.copies_stopped_at,
                           records_per_epoch=records.per_epoch, steps_per_record=records.steps_per_record, **fit)
    low, high = net.p_interval(confidence)
    return Evaluation(float(eta), float(net.p) if net.n_fitted else 0.0, low, high, net.n_fitted, net.mean,
                      float((records.diverged_at[:, 0] >= 0).mean()), records.network_epochs, stored,
                      net.n_unresolved)


def check_search(*, eta_min: float, eta_max: float, p_high: float = 95.0, rel_width: float = 0.1, parallel: int = 1,
                 max_initial: int | None = None, n_initial: int | None = None, confidence: float = 0.95) -> None:
    """Refuse search settings that cannot work, before anything is computed; each message names the setting."""
    if not (math.isfinite(eta_min) and math.isfinite(eta_max) and 0 < eta_min < eta_max):
        raise ValueError(f"eta_min and eta_max: need 0 < eta_min < eta_max, both finite; got {eta_min}, {eta_max}")
    if not 0 < p_high < 100:
        raise ValueError(f"p_high: the p (%) that counts as developed must be in (0, 100); got {p_high}")
    if not (math.isfinite(rel_width) and rel_width > 0):
        raise ValueError(f"rel_width must be a finite number > 0; got {rel_width}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: the level of the Wilson intervals must be in (0, 1); got {confidence}")
    if int(parallel) != parallel or parallel < 1:
        raise ValueError(f"parallel must be an integer >= 1; got {parallel}")
    if max_initial is not None and (int(max_initial) != max_initial or max_initial < 1):
        raise ValueError(f"max_initial must be an integer >= 1 or None; got {max_initial}")
    if max_initial is not None and n_initial is not None and max_initial < n_initial:
        raise ValueError(f"max_initial ({max_initial}) is below the initial conditions of one evaluation "
                         f"({n_initial}): it could never add any")


WIDEN_UP = 2  # decades above eta_max tried before answering with the highest p instead of an onset


def _highest_p(done: dict[float, "Evaluation"]) -> SweetSpot:
    """The answer when p never reaches p_high: the smallest learning rate of the highest p among those that do not
    diverge, bracketed by its evaluated neighbours."""
    evaluations = tuple(sorted(done.values(), key=lambda e: e.eta))
    # Never empty: the search only gives up widening at a learning rate that does not diverge.
    best = max((e for e in evaluations if not e.diverges), key=lambda e: e.p)
    k = evaluations.index(best)
    low, high = evaluations[max(k - 1, 0)].eta, evaluations[min(k + 1, len(evaluations) - 1)].eta
    return SweetSpot(best.eta, low, high, evaluations, p_high_reached=False)


def find_sweet_spot(evaluate: Callable[[float], Evaluation], *, eta_min: float, eta_max: float,
                    p_high: float = 95.0, rel_width: float = 0.1, max_evaluations: int = 30,
                    known: dict[float, Evaluation] | None = None, parallel: int = 1,
                    max_initial: int | None = None) -> SweetSpot:
    """Bracket and bisect (on log eta) the smallest eta with p >= ``p_high`` and no divergence.

    When p stays below ``p_high`` up to ``WIDEN_UP`` decades above ``eta_max``, the answer is the learning rate of
    the highest p measured (``SweetSpot.p_high_reached`` is False): where sensitivity is most developed.

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
        return SweetSpot(math.nan, float(low), float(high), evaluations, diverging_edge=True, confident=confident)
    return SweetSpot(float(min(e.eta for e in developed)), float(low), float(high), evaluations,
                     confident=confident)


class Evaluator:
    """Measures p at a learning rate from ``n_initial`` initial conditions, and can add more of them.

    Subclasses say how a block of initial conditions is trained (``records``); the records of each learning rate are
    kept, so ``extend`` trains only the new initial conditions. ``many`` evaluates several learning rates (one after
    another here; side by side in subclasses that can).
    """

    def __init__(self, n_initial: int, *, confidence: float = 0.95, **fit):
        if int(n_initial) != n_initial or n_initial < 1:
            raise ValueError(f"n_initial must be an integer >= 1; got {n_initial}")
        self.n_initial, self.confidence, self.fit = int(n_initial), confidence, fit
        self._records: dict[float, object] = {}
        self._evaluations: dict[float, Evaluation] = {}  # of the records above, computed once per addition

    def records(self, eta: float, first: int, count: int):
        """Engine records of initial conditions ``first .. first + count - 1`` at ``eta``."""
        raise NotImplementedError

    def initial(self, eta: float) -> int:
        """Initial conditions trained so far at ``eta``."""
        records = self._records.get(float(eta))
        return 0 if records is None else len(records.initial_condition)

    def _add(self, eta: float, records) -> Evaluation:
        from chaosgd.records import concatenate

        eta = float(eta)
        self._records[eta] = records if eta not in self._records else concatenate([self._records[eta], records])
        self._evaluations[eta] = evaluation_from_records(self._records[eta], eta, confidence=self.confidence,
                                                         **self.fit)
        return self._evaluations[eta]

    def __call__(self, eta: float) -> Evaluation:
        if float(eta) in self._evaluations:
            return self._evaluations[float(eta)]
        return self._add(eta, self.records(float(eta), 0, self.n_initial))

    def extend(self, eta: float, count: int) -> Evaluation:
        """Train ``count`` more initial conditions at ``eta`` and evaluate all of them."""
        return self._add(eta, self.records(float(eta), self.initial(eta), int(count)))

    def many(self, etas) -> list[Evaluation]:
        return [self(eta) for eta in etas]
