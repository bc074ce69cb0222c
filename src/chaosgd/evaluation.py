"""What the learning-rate search measures at one learning rate: sensitivity and trainability on the same runs.

An ``Evaluation`` holds, for one learning rate trained for a short budget (the search's horizon): p, the
percentage of initial conditions with a positive local exponent, with its Wilson interval, and lambda_NMLE — the
paper's sensitivity (arXiv:2506.08523) — and, from the reference networks of the same runs, how well they train:
the fraction that diverged, the fraction that ended stuck at chance accuracy, and their training progress,

    progress_i = 1/(T+1) sum_{t=0..T} h_i(t),   h_i(t) = 1 once a_i has reached the target (first passage;
                                                 with hold k, from the start of k epochs at or above it),
                                                 before that PRE * min(a_i(t), target) / target,

a time average over the budget of reference i's test accuracy a_i(t) (0 after a network diverged). Up to the
constant 1 - PRE it is one minus the restricted mean time to the target over the budget, as the full runs are
judged (with the same hold, ``training.target_hold``: a stretch that the budget cuts short does not count), and
among networks that do not reach the target within the short budget it still orders them by how close they came
(that part weighs PRE = 1/2, so that reaching the target sooner always counts for more). Its interval is
Student's t over the initial conditions.

``Evaluator`` trains initial conditions at a learning rate and keeps their records, so that more can be added
where a decision is open (``extend``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from chaosgd.defaults import CONFIDENCE, MOSTLY
from chaosgd.lyapunov import network_exponent
from chaosgd.records import concatenate


@dataclass(frozen=True)
class Evaluation:
    """Sensitivity and trainability at one learning rate (see the module docstring)."""

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
    progress: float = math.nan  # mean capped accuracy over the budget (module docstring); NaN: not measured
    progress_low: float = math.nan  # its confidence interval
    progress_high: float = math.nan
    stuck_fraction: float = 0.0  # reference networks whose final test accuracy is at chance
    epochs: int = 0  # the budget (horizon) each network was trained for
    n_networks: int = 0  # reference networks behind the trainability numbers (all initial conditions)
    lambda_low: float = math.nan  # lambda_NMLE's bootstrap interval
    lambda_high: float = math.nan

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
        that diverges, such a point bounds the onset search from above and is never its answer."""
        low, high = self.p_range()
        return low < p_high <= high

    def decided(self, p_high: float) -> bool:
        """The interval lies on one side of p_high (or the references diverge), and so do the unresolved."""
        return self.diverges or (not self.open(p_high) and (self.ci_high < p_high or self.ci_low >= p_high))

    @property
    def diverges(self) -> bool:
        return self.diverged_fraction > MOSTLY

    @property
    def failed_fraction(self) -> float:
        """Networks that diverged or ended stuck at chance."""
        return self.diverged_fraction + self.stuck_fraction

    @property
    def trainable(self) -> bool:
        """Most networks neither diverge nor end at chance accuracy."""
        return self.failed_fraction <= MOSTLY


PRE = 0.5  # the weight of the accuracy before a network first reaches the target (module docstring)


def progress_scores(test_accuracy: np.ndarray, target: float, *, hold: int = 1,
                    records_per_epoch: int = 1) -> np.ndarray:
    """Each reference network's training progress over its records (module docstring); records after it diverged
    (NaN) count as accuracy 0. ``hold``: epochs the accuracy must stay at or above the target for a passage
    (``training_time.time_to_accuracy``'s), over ``records_per_epoch`` records an epoch."""
    accuracy = np.nan_to_num(np.asarray(test_accuracy, dtype=float), nan=0.0)
    above = accuracy >= target
    for name, value in (("hold", hold), ("records_per_epoch", records_per_epoch)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    width = int(records_per_epoch) * (int(hold) - 1) + 1  # a passage starts this many records at the target
    if width > above.shape[1]:
        raise ValueError(f"hold = {hold} epochs at the target is longer than the records ({above.shape[1]} at "
                         f"{records_per_epoch} an epoch)")
    if width > 1:  # (stretches the records cut short do not count)
        counts = np.concatenate([np.zeros((len(above), 1), int), np.cumsum(above, axis=1)], axis=1)
        starts = np.zeros_like(above)
        starts[:, :above.shape[1] - width + 1] = counts[:, width:] - counts[:, :-width] == width
        above = starts
    reached = np.maximum.accumulate(above, axis=1)
    return np.where(reached, 1.0, PRE * np.minimum(accuracy, target) / target).mean(axis=1)


def mean_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of ``values`` with Student's t interval, clipped to [0, 1]; one value gives [0, 1]."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, 0.0, 1.0
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def evaluation_from_records(records, eta: float, *, confidence: float = CONFIDENCE, stored: bool = False,
                            target: float | None = None, n_classes: int | None = None, chance_margin: float = 0.05,
                            hold: int = 1, **fit) -> Evaluation:
    """An ``Evaluation`` from engine records of one learning rate (``fit``: r2_min, lambda_min, plateau).

    ``target``: the test accuracy that the progress is capped at (None: progress not measured), reached once held
    ``hold`` epochs; ``n_classes``: chance is 1 / n_classes, and a network whose final test accuracy is at most
    chance + ``chance_margin`` is stuck (None: not counted)."""
    net = network_exponent(records.distance, stopped_at=records.copies_stopped_at, confidence=confidence,
                           records_per_epoch=records.per_epoch, steps_per_record=records.steps_per_record, **fit)
    low, high = net.p_interval(confidence)
    diverged = records.diverged_at[:, 0] >= 0
    progress = (math.nan,) * 3
    if target is not None:
        progress = mean_interval(progress_scores(records.test_accuracy, target, hold=hold,
                                                 records_per_epoch=records.per_epoch), confidence)
    stuck = 0.0
    if n_classes is not None:
        final = records.test_accuracy[:, -1]
        stuck = float((~diverged & (final <= 1 / n_classes + chance_margin)).mean())
    return Evaluation(float(eta), float(net.p) if net.n_fitted else 0.0, low, high, net.n_fitted, net.mean,
                      float(diverged.mean()), records.network_epochs, stored, net.n_unresolved, *progress, stuck,
                      int(records.epochs), len(records.initial_condition), net.ci_low, net.ci_high)


class Evaluator:
    """Measures an ``Evaluation`` at a learning rate from ``n_initial`` initial conditions, and can add more.

    Subclasses say how a block of initial conditions is trained (``records``); the records of each learning rate are
    kept, so ``extend`` trains only the new initial conditions. ``many`` evaluates several learning rates (one after
    another here; side by side in subclasses that can). ``target`` and ``n_classes``: see
    ``evaluation_from_records``.
    """

    def __init__(self, n_initial: int, *, confidence: float = CONFIDENCE, target: float | None = None,
                 n_classes: int | None = None, chance_margin: float = 0.05, hold: int = 1, **fit):
        if int(n_initial) != n_initial or n_initial < 1:
            raise ValueError(f"n_initial must be an integer >= 1; got {n_initial}")
        self.n_initial, self.confidence, self.fit = int(n_initial), confidence, fit
        if int(hold) != hold or hold < 1:
            raise ValueError(f"hold must be an integer >= 1 (epochs at or above the target); got {hold}")
        self.trainability = {"target": target, "n_classes": n_classes, "chance_margin": chance_margin,
                             "hold": int(hold)}
        self._records: dict[float, object] = {}
        self._evaluations: dict[float, Evaluation] = {}  # of the records above, computed once per addition

    def records(self, eta: float, first: int, count: int):
        """Engine records of initial conditions ``first .. first + count - 1`` at ``eta``."""
        raise NotImplementedError

    def initial(self, eta: float) -> int:
        """Initial conditions trained so far at ``eta``."""
        records = self._records.get(float(eta))
        return 0 if records is None else len(records.initial_condition)

    def evaluation(self, records, eta: float, *, stored: bool = False) -> Evaluation:
        """The evaluation of ``records`` at ``eta`` with this evaluator's settings."""
        return evaluation_from_records(records, eta, confidence=self.confidence, stored=stored,
                                       **self.trainability, **self.fit)

    def _add(self, eta: float, records) -> Evaluation:
        eta = float(eta)
        self._records[eta] = records if eta not in self._records else concatenate([self._records[eta], records])
        self._evaluations[eta] = self.evaluation(self._records[eta], eta)
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
