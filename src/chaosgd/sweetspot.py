"""The learning rate to train with, and the onset of chaos beside it, from one search over log eta.

The paper (arXiv:2506.08523) finds training fastest where chaos sets in — where p, the percentage of initial
conditions with a positive local exponent, rises to about 100 % — and proposes to locate that learning rate before
training. Measured on more tasks (docs/design.md, "Deciding a learning rate") the fastest learning rate lies at
the onset or below it, and where p peaks networks may already have stopped learning (Iris: p tops out at 74 % at
eta = 1, where 38 of 50 networks end at chance). So this search measures, at each learning rate it evaluates, both
sensitivity and trainability on the same short runs (``chaosgd.evaluation``), recommends the learning rate of the
best measured training progress among those where most networks train, and reports the onset of chaos beside it,
with its bracket: the onset bounds the search from above, the progress decides the recommendation.

The search, on the log grid eta_min * step**k:
1. Scan up from the middle of [eta_min, eta_max] until most networks fail (diverge or end at chance), or chaos is
   developed (p >= p_high) while progress has fallen below the best so far; then down until progress falls below
   the best. While the best lies at an end of the range the scan goes on past it, up to ``WIDEN`` decades.
2. Refine: the neighbours of the best trainable learning rate at half the spacing (on log eta), until the spacing
   is at most 1 + ``rel_width``.
3. Where p crosses p_high between two evaluated neighbours, the onset is bisected to the same resolution
   (``chaosgd.onset.find_onset``, which also adds initial conditions at its ends with ``max_initial``).
4. With ``max_initial``: where another learning rate's progress interval reaches the best's, both get more initial
   conditions (doubling, up to ``max_initial``).

The learning rate of the best measured progress (``SweetSpot.fastest``) is a noisy pick among learning rates that
train about as fast: a few networks over a short budget cannot see the rare network that stalls on a plateau,
which the full runs' time to target counts. The default rule (``"edge"``, ``SweetSpot.edge``) breaks that tie as
the paper suggests: the largest learning rate not above the onset of chaos whose progress interval reaches the
fastest's measured progress (the measurements cannot tell it slower); ``docs/lr_finders.md`` measures both rules
against full grids, and the ways of telling "as fast" that were tried. Its interval: the trainable
learning rates evaluated whose progress intervals reach the fastest's. Where no learning rate trains, ``eta`` is NaN and
``reason`` says why: the search always answers, never with None.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

from chaosgd.defaults import CONFIDENCE, P_HIGH
from chaosgd.evaluation import Evaluation
from chaosgd.onset import Onset, check_search, find_onset
from chaosgd.precision import float64

STEP = 10 ** 0.5  # the scan's spacing on eta: two points a decade
REL_WIDTH = 10 ** 0.25 - 1  # refined to four points a decade around the recommendation and the onset
RULES = ("edge", "fastest")  # how the recommendation is chosen among the learning rates that train as fast
WIDEN = 2  # decades the scan may go past an end of [eta_min, eta_max] while the best progress lies at that end


@dataclass(frozen=True)
class SweetSpot:
    """The recommended learning rate ``eta`` with its interval [``low``, ``high``], the onset of chaos (None where
    p did not cross p_high between two learning rates evaluated), every evaluation, and ``reason``: the answer in
    words, with why the recommendation and the onset differ."""

    eta: float
    low: float
    high: float
    onset: Onset | None
    evaluations: tuple[Evaluation, ...]
    p_high: float
    reason: str
    confidence: float = CONFIDENCE
    fastest: float = math.nan  # the learning rate of the best progress measured ("fastest" rule)
    edge: float = math.nan  # the largest not told slower than it, not above the onset ("edge" rule)
    rule: str = "edge"  # which of the two is ``eta``

    @property
    def network_epochs(self) -> int:
        """Network-epochs this search computed (stored evaluations it reused are free)."""
        return sum(e.network_epochs for e in self.evaluations if not e.stored)

    @property
    def p_high_reached(self) -> bool:
        return self.onset is not None and math.isfinite(self.onset.eta)

    def at(self, eta: float) -> Evaluation:
        return next(e for e in self.evaluations if e.eta == eta)

    def to_dict(self) -> dict:
        """Plain data for ``sweetspot.json``."""
        onset = None if self.onset is None else {
            "eta": self.onset.eta, "bracket": [self.onset.low, self.onset.high], "confident": self.onset.confident,
            "diverging_edge": self.onset.diverging_edge}
        return {"eta": self.eta, "interval": [self.low, self.high], "rule": self.rule, "fastest": self.fastest,
                "edge": self.edge, "reason": self.reason, "onset": onset,
                "p_high": self.p_high, "p_high_reached": self.p_high_reached, "confidence": self.confidence,
                "network_epochs": self.network_epochs,
                "evaluations": [asdict(e) for e in self.evaluations]}


def _tidy(eta: float) -> float:
    """eta to 12 significant digits: 0.01 * sqrt(10)**4 is 1.0000000000000002, and a sweep's stored 1.0 is the same
    learning rate (two evaluations a roundoff apart would read as a jump between neighbours)."""
    return float(f"{eta:.12g}")


def _rises(e: Evaluation, p_high: float) -> bool:
    """p has reached p_high here, or the records cannot tell (unresolved), or the references diverge."""
    return e.diverges or e.open(p_high) or e.developed(p_high)


@float64
def find_sweet_spot(evaluate: Callable[[float], Evaluation], *, eta_min: float, eta_max: float,
                    p_high: float = P_HIGH, rel_width: float = REL_WIDTH, step: float = STEP,
                    known: dict[float, Evaluation] | None = None, parallel: int = 1, max_initial: int | None = None,
                    max_evaluations: int = 40, confidence: float = CONFIDENCE, rule: str = "edge") -> SweetSpot:
    """Recommend a learning rate by measured training progress and locate the onset of chaos (module docstring).

    ``evaluate(eta)``: an ``Evaluator`` (``chaosgd.experiments.search``) or any function returning an
    ``Evaluation`` with its progress measured. ``known``: evaluations already made (a sweep's store, of the same
    horizon), used before anything is computed. ``parallel``: learning rates evaluated at once (``evaluate.many``
    runs them side by side). ``max_initial``: more initial conditions where a decision is open. ``confidence``:
    the level of the evaluations' intervals, for the words of ``reason``. ``rule``: ``"edge"`` recommends the
    largest learning rate, not above the onset of chaos, that the measurements cannot tell slower than the fastest
    (its progress interval reaches the fastest's progress); ``"fastest"`` the one of the best measured progress
    (``RULES``; both are in the result).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    check_search(eta_min=eta_min, eta_max=eta_max, p_high=p_high, rel_width=rel_width, parallel=parallel,
                 max_initial=max_initial, n_initial=getattr(evaluate, "n_initial", None), confidence=confidence)
    if not (math.isfinite(step) and step > 1):
        raise ValueError(f"step: the scan's ratio between learning rates must be a finite number > 1; got {step}")
    if max_initial is not None and not hasattr(evaluate, "extend"):
        raise ValueError("max_initial needs an Evaluator (config_evaluator, model_evaluator or a subclass), which can "
                         "train more initial conditions at a learning rate")
    done: dict[float, Evaluation] = dict(known or {})

    def at_all(etas: list[float]) -> list[Evaluation]:
        new = [eta for eta in dict.fromkeys(etas) if eta not in done]
        if new:
            if sum(not e.stored for e in done.values()) + len(new) > max_evaluations:
                raise RuntimeError(f"the search needed more than max_evaluations = {max_evaluations} evaluations")
            results = evaluate.many(new) if len(new) > 1 and hasattr(evaluate, "many") else map(evaluate, new)
            done.update(zip(new, results))
            if any(math.isnan(done[eta].progress) for eta in new):
                raise ValueError("the evaluations do not measure training progress: the evaluator needs the target "
                                 "accuracy (target=...)")
        return [done[eta] for eta in etas]

    def best() -> Evaluation | None:
        trainable = [e for e in done.values() if e.trainable and math.isfinite(e.progress)]
        return max(trainable, key=lambda e: (e.progress, e.eta)) if trainable else None  # ties: the larger

    def grid(k: int) -> float:
        return _tidy(eta_min * step ** k)

    top = max(1, math.ceil(math.log(eta_max / eta_min) / math.log(step) - 1e-9))
    widen = round(WIDEN * math.log(10) / math.log(step))
    start = top // 2

    k = start  # 1. scan up
    while k <= top + widen:
        chunk = [j for j in range(k, k + parallel) if j <= top + widen]
        leader = best()
        stop = False
        for j, e in zip(chunk, at_all([grid(j) for j in chunk])):
            worse = leader is not None and e.progress < leader.progress
            if not e.trainable or (_rises(e, p_high) and worse):
                stop = True
                break
            leader = best()
        k = chunk[-1] + 1
        if stop or (k > top and best() is not None and best().eta < grid(k - 1)):
            break
    k = start - 1  # ... and down
    while k >= -widen:
        e = at_all([grid(k)])[0]
        leader = best()  # (while nothing trains, the scan goes on down)
        if leader is not None and (e.progress < leader.progress or (k < 0 and leader.eta > e.eta)):
            break
        k -= 1

    spacing = step  # 2. refine around the best
    while spacing > 1 + rel_width + 1e-12 and best() is not None:
        spacing = math.sqrt(spacing)
        at_all([_tidy(best().eta / spacing), _tidy(best().eta * spacing)])

    if max_initial is not None:  # 4. more initial conditions where the best is not yet told apart
        for _ in range(8):
            leader = best()
            if leader is None:
                break
            rivals = [e for e in done.values() if e.trainable and e is not leader and not e.stored
                      and e.progress_high >= leader.progress_low]
            grow = [e.eta for e in [leader] + rivals if not e.stored and evaluate.initial(e.eta) < max_initial]
            if not rivals or not grow:
                break
            for eta in grow:
                done[eta] = evaluate.extend(eta, min(evaluate.initial(eta), max_initial - evaluate.initial(eta)))

    onset = None  # 3. the onset, bisected where the evaluations bracket it
    ordered = sorted(done.values(), key=lambda e: e.eta)
    crossings = [(a, b) for a, b in zip(ordered, ordered[1:]) if not _rises(a, p_high) and _rises(b, p_high)]
    if crossings:
        a, b = crossings[0]
        onset = find_onset(evaluate, eta_min=a.eta, eta_max=b.eta, p_high=p_high, rel_width=rel_width,
                           known=done, parallel=parallel, max_initial=max_initial, max_evaluations=max_evaluations)
        done.update({e.eta: e for e in onset.evaluations})

    evaluations = tuple(sorted(done.values(), key=lambda e: e.eta))
    leader = best()
    if leader is None:
        return SweetSpot(math.nan, math.nan, math.nan, onset, evaluations, p_high,
                         _reason(None, None, (), onset, evaluations, p_high, confidence), confidence, rule=rule)
    peers = [e for e in evaluations if e.trainable and e.progress_high >= leader.progress_low]
    # Not above the onset: where the bracket closed on divergence or unresolved exponents, not above its low end.
    cap = math.inf if onset is None else onset.eta if math.isfinite(onset.eta) else onset.low
    tied = [e for e in peers if e.progress_high >= leader.progress and e.eta <= cap]
    edge = max(tied, key=lambda e: e.eta, default=leader)
    chosen = edge if rule == "edge" else leader
    return SweetSpot(chosen.eta, min(e.eta for e in peers), max(e.eta for e in peers), onset, evaluations, p_high,
                     _reason(chosen, leader, peers, onset, evaluations, p_high, confidence), confidence,
                     fastest=leader.eta, edge=edge.eta, rule=rule)


def _failure(e: Evaluation) -> str:
    n = e.n_networks or 1
    parts = [f"{round(e.diverged_fraction * n)} of {n} diverge"] if e.diverged_fraction else []
    if e.stuck_fraction:
        parts.append(f"{round(e.stuck_fraction * n)} of {n} end at chance accuracy")
    return " and ".join(parts) or "none fails"


def _reason(chosen, leader, peers, onset, evaluations, p_high, confidence) -> str:
    """The answer in words: the recommendation and why, the onset of chaos and how the two relate."""
    span = f"eta = {evaluations[0].eta:.3g} .. {evaluations[-1].eta:.3g}"
    if leader is None:
        worst = ", ".join(f"{e.eta:.3g}: {_failure(e)}" for e in evaluations)
        return (f"No learning rate evaluated ({span}) trains: at every one most networks diverge or end at chance "
                f"accuracy ({worst}). Try a lower eta_min, a longer search budget, or another model or data "
                "scaling.")
    low, high = min(e.eta for e in peers), max(e.eta for e in peers)
    def progress(e):
        return f"progress {e.progress:.2f} [{e.progress_low:.2f}, {e.progress_high:.2f}]"
    fastest = (f"the fastest training measured over the first {leader.epochs} epochs ({progress(leader)} of the way "
               f"to the target, from {leader.n_networks} networks)")
    if chosen is leader:
        text = f"eta = {chosen.eta:.3g}: {fastest}"
    else:
        text = (f"eta = {chosen.eta:.3g} ({progress(chosen)}): the largest learning rate not above the onset of chaos "
                f"whose progress interval reaches {fastest}, at eta = {leader.eta:.3g}")
    text += (f"; eta = {low:.3g} .. {high:.3g} train as fast within the {confidence:.0%} intervals."
             if low < high else "; no other learning rate evaluated trains as fast.")
    above = [e for e in evaluations if e.eta > chosen.eta]
    edge = next((e for e in above if not e.trainable), None)
    if edge is not None:
        below_edge = max(e.eta for e in evaluations if e.eta < edge.eta)
        text += f" Above eta = {below_edge:.3g} networks stop learning (at {edge.eta:.3g}, {_failure(edge)})."
    if onset is not None and math.isfinite(onset.eta):
        where = ("at the onset" if onset.low < chosen.eta <= onset.high else
                 f"a factor {onset.eta / chosen.eta:.2g} below the onset" if chosen.eta < onset.eta else
                 f"a factor {chosen.eta / onset.eta:.2g} above the onset")
        text += (f" Chaos sets in (p >= {p_high:g}%) between eta = {onset.low:.3g} and {onset.high:.3g}: the "
                 f"recommendation lies {where}.")
    else:
        chaotic = [e for e in evaluations if not e.diverges and e.n]
        top = max(chaotic, key=lambda e: e.p_range()[1], default=None)
        if top is not None and top.developed(p_high):
            text += f" p is already >= {p_high:g}% at the lowest learning rate evaluated ({evaluations[0].eta:.3g})."
        elif top is not None:
            trains = " where networks train" if edge is not None else ""
            text += (f" p never reaches {p_high:g}%{trains} (at most {top.p:.0f}% at eta = {top.eta:.3g}, of "
                     f"{top.n} initial conditions).")
        if onset is not None and onset.diverging_edge:
            text += (f" Between eta = {onset.low:.3g} and {onset.high:.3g} p goes from below {p_high:g}% to where the "
                     "references diverge or their exponents are too fast for the records.")
    return text
