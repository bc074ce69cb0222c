"""The paper's finite epsilon-ball estimator of the local network Lyapunov exponent, and its summary over S.

For one initial condition Omega(0) with M perturbed copies at L1 distances ``d_j(t)`` from the reference,

    y(t) = (1/M) sum_j ln d_j(t),

and the local exponent ``lambda_Omega(0)`` is the least-squares slope of y over the exponential phase [0, tau]
(Jimenez-Gonzalez, Soriano & Lacasa, eq. 3). tau is where the expansion saturates; it is found by fitting the hinge
``y ~ a + b * min(t, tau)`` (a line, then a plateau) for every tau and keeping the one with the least squared error:
a deterministic rule that puts tau at the knee of an exponential-then-plateau curve, and that for a curve without a
plateau (pure growth, pure shrinking) lets the window run to the end. The knee is searched over the epochs up to the
first one by which a plateau of ``plateau`` epochs follows it, so later epochs never change the fit and the copies
can stop there (``engine.run(stop_copies=CopiesSettled(plateau))``). A curve that has not risen by ``QUIET_RISE``
above y(0) in its first ``plateau`` epochs (its distance grew by less than 10 %) has no exponential phase to fit: its
fit is settled at epoch ``plateau`` too. (A phase at the paper's lambda_min = 0.05 starting at t = 0 would have risen
by 2 in 40 epochs; on the full paper-scale MNIST tanh sweep, no initial condition that the fit over all 201 epochs
calls positive is quiet over its first 40 -- see the README.) A local exponent counts as positive when the fit has
R^2 > 0.9 and lambda > 0.05 (the paper's thresholds, configurable).

With r records per epoch (minibatches recorded every few steps), the curve has r points an epoch: every duration
above (the plateau, the windows) stays in epochs, and the exponent is per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chaosgd.defaults import CONFIDENCE

R2_MIN = 0.9
LAMBDA_MIN = 0.05
PLATEAU = 40  # epochs of plateau after the knee that settle the fit (see local_exponent)
QUIET_RISE = 0.1  # a curve that rose less than this over its first PLATEAU epochs is settled there (no expansion)
# A curve that rises by more than UNRESOLVED_RISE (a factor e^5) within fewer than UNRESOLVED_RECORDS records has an
# exponential phase too short for its records (minibatches: many steps a record): its fit is not a measurement.
UNRESOLVED_RECORDS, UNRESOLVED_RISE = 5, 5.0


@dataclass(frozen=True)
class LocalExponent:
    """The fit of one initial condition's log-distance curve.

    Attributes:
        exponent: slope lambda of the line over the window (per epoch); NaN if there was nothing to fit.
        intercept: value of the line at t = 0.
        r2: coefficient of determination of the line over the window.
        stderr: standard error of the slope.
        start, stop: the window, records ``start .. stop`` inclusive (epochs when one record an epoch; ``window``
            gives it in epochs).
        n_copies: copies that entered y(t) (copies that diverged or sit at distance 0 are left out).
        positive: True when r2 > r2_min and exponent > lambda_min.
        log_distance: y(t) for every record, so the fit can be shown and checked.
        records_per_epoch: r, records per epoch of ``log_distance``.
        steps_per_record: optimiser steps between two records (1: every step is recorded, nothing lies between);
            None: not known.
    """

    exponent: float
    intercept: float
    r2: float
    stderr: float
    start: int
    stop: int
    n_copies: int
    positive: bool
    log_distance: np.ndarray
    records_per_epoch: int = 1
    steps_per_record: int | None = None

    def line(self, t) -> np.ndarray:
        """The fitted line at epochs ``t``."""
        return self.intercept + self.exponent * np.asarray(t, dtype=float)

    @property
    def time(self) -> np.ndarray:
        """The epoch of each entry of ``log_distance``."""
        return np.arange(self.log_distance.size) / self.records_per_epoch

    @property
    def window(self) -> tuple[float, float]:
        """The fit window in epochs."""
        return self.start / self.records_per_epoch, self.stop / self.records_per_epoch

    @property
    def unresolved(self) -> bool:
        """The curve rose by more than ``UNRESOLVED_RISE`` within fewer than ``UNRESOLVED_RECORDS`` records: the
        expansion happened between a few records, and neither the slope nor whether it counts as positive is
        measured (record more often: ``training.records_per_epoch``). Never when every step is recorded
        (``steps_per_record == 1``, full batches): a fast expansion is then measured step by step, as in any map."""
        if not np.isfinite(self.exponent) or self.steps_per_record == 1:
            return False
        rise = self.log_distance[self.stop] - self.log_distance[self.start]
        return bool(self.stop - self.start < UNRESOLVED_RECORDS and rise > UNRESOLVED_RISE)

    @property
    def measured(self) -> bool:
        """A fit that enters lambda_NMLE and p: something could be fitted, and it is resolved."""
        return bool(np.isfinite(self.exponent)) and not self.unresolved


def mean_log_distance(distance: np.ndarray) -> tuple[np.ndarray, int]:
    """``y(t) = mean_j ln d_j(t)`` over the copies whose distance is finite and > 0 at every epoch.

    ``distance`` has shape (M, T + 1). Returns y and the number of copies used (y is all-NaN if none).
    """
    d = np.asarray(distance, dtype=float)
    usable = np.all(np.isfinite(d) & (d > 0), axis=-1)
    if not usable.any():
        return np.full(d.shape[-1], np.nan), 0
    return np.log(d[usable]).mean(axis=0), int(usable.sum())


def saturation_epoch(y: np.ndarray, *, min_window: int = 3) -> int:
    """tau: the knee of the best continuous line-then-plateau fit ``a + b * min(t, tau)`` to y(t).

    Every tau in ``min_window .. T`` is tried (closed-form least squares for each, from prefix sums, so O(T) in
    all); ties go to the smallest tau.
    """
    y = np.asarray(y, dtype=float)
    n = y.size
    taus = np.arange(min(min_window, n - 1), n)
    t = np.arange(n, dtype=float)
    # Sums over t of x = min(t, tau), x^2 and x*y, as prefix sums up to tau plus the constant tail tau, ..., tau.
    tail = (n - 1 - taus).astype(float)
    sum_x = np.cumsum(t)[taus] + tail * taus
    sum_xx = np.cumsum(t * t)[taus] + tail * taus ** 2
    cy = np.cumsum(y)
    sum_xy = np.cumsum(t * y)[taus] + taus * (cy[-1] - cy[taus])
    sxx = sum_xx - sum_x ** 2 / n
    sxy = sum_xy - sum_x * cy[-1] / n
    syy = ((y - y.mean()) ** 2).sum()
    explained = np.where(sxx > 0, sxy ** 2 / np.where(sxx > 0, sxx, 1), 0)
    # Relative rounding, so that candidates equal up to roundoff tie and the smallest tau wins.
    sse = np.round((syy - explained) / max(syy, 1e-300), 10)
    return int(taus[np.argmin(sse)])


def is_quiet(y: np.ndarray, plateau: int, quiet_rise: float | None = QUIET_RISE) -> bool:
    """True when y has at least ``plateau + 1`` epochs and stayed below y(0) + quiet_rise over epochs 0 .. plateau."""
    y = np.asarray(y, dtype=float)
    return quiet_rise is not None and y.size > plateau and bool(np.max(y[:plateau + 1] - y[0]) < quiet_rise)


def settled_epoch(y: np.ndarray, plateau: int, *, start: int = 0, min_window: int = 3,
                  quiet_rise: float | None = QUIET_RISE) -> int | None:
    """First epoch t >= start at which the fit of the causal rule no longer depends on later epochs: ``plateau``
    if y is quiet (``is_quiet``), else the first t at which the knee found on y[0..t] lies ``plateau`` epochs or more
    behind t.

    From then on the perturbed copies can stop (``engine.run(stop_copies=CopiesSettled(plateau))``). None if that
    never happens within y.
    """
    y = np.asarray(y, dtype=float)
    if is_quiet(y, plateau, quiet_rise):
        return max(start, plateau)
    for t in range(max(start, plateau + min_window), y.size):
        if t - saturation_epoch(y[:t + 1], min_window=min_window) >= plateau:
            return t
    return None


@dataclass(frozen=True)
class CopiesSettled:
    """The paper's stopping rule for perturbed copies, for ``engine.run(stop_copies=CopiesSettled(plateau))``: a
    group's copies may stop once the causal fit of its exponent is settled (``settled_epoch``), so that
    ``local_exponent(..., plateau=plateau, quiet_rise=quiet_rise)`` on the stopped records gives the same exponent.

    Attributes:
        plateau: epochs of plateau after the knee that settle the fit (default ``PLATEAU`` = 40); also the epoch of
            the first check (``first_check``), where a quiet curve settles.
        quiet_rise: rise of y(t) below which a curve counts as quiet (default ``QUIET_RISE``; None: never quiet).
        records_per_epoch: r, that of the run (``engine.run(records_per_epoch=r)``, which checks they agree): the
            rule then sees r records an epoch, and its first check is at record ``plateau * r``.
    """

    plateau: int = PLATEAU
    quiet_rise: float | None = QUIET_RISE
    records_per_epoch: int = 1

    def __post_init__(self):
        if isinstance(self.plateau, bool) or int(self.plateau) != self.plateau or self.plateau < 1:
            raise ValueError(f"plateau must be a number of epochs >= 1; got {self.plateau}")
        if int(self.records_per_epoch) != self.records_per_epoch or self.records_per_epoch < 1:
            raise ValueError(f"records_per_epoch must be an integer >= 1; got {self.records_per_epoch}")

    @property
    def first_check(self) -> int:
        """The record of the first check."""
        return int(self.plateau * self.records_per_epoch)

    def __call__(self, distance: np.ndarray, checked: np.ndarray) -> np.ndarray:
        """For each group, whether its copies may stop now.

        ``distance`` (G, M, t + 1): each group's copies' distances up to the current epoch t; ``checked`` (G,): the
        last epoch already checked for each group (0 before the first check), so only later epochs are searched.
        A group without a usable copy (all diverged or at distance 0) never settles here.
        """
        done = np.zeros(len(distance), dtype=bool)
        for i, d in enumerate(distance):
            y, used = mean_log_distance(d)
            done[i] = used > 0 and settled_epoch(y, self.first_check, start=int(checked[i]) + 1,
                                                 quiet_rise=self.quiet_rise) is not None
        return done


def fit_line(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares line through (t, y): slope, intercept, R^2 and the slope's standard error."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    n = t.size
    tm, ym = t.mean(), y.mean()
    stt = ((t - tm) ** 2).sum()
    slope = ((t - tm) * (y - ym)).sum() / stt
    intercept = ym - slope * tm
    residual = y - (intercept + slope * t)
    syy = ((y - ym) ** 2).sum()
    r2 = 1.0 - (residual ** 2).sum() / syy if syy > 0 else 1.0
    stderr = np.sqrt((residual ** 2).sum() / (n - 2) / stt) if n > 2 else np.nan
    return float(slope), float(intercept), float(r2), float(stderr)


def local_exponent(distance: np.ndarray, *, window: tuple[int, int] | None = None, r2_min: float = R2_MIN,
                   lambda_min: float = LAMBDA_MIN, plateau: int | None = PLATEAU,
                   stopped_at: int | None = None, quiet_rise: float | None = QUIET_RISE,
                   records_per_epoch: int = 1, steps_per_record: int | None = None) -> LocalExponent:
    """The local exponent lambda_Omega(0) of one initial condition from its copies' distances (shape (M, T + 1)).

    ``window=(start, stop)`` fixes the fitted epochs (inclusive). By default the window is ``(0, tau)`` with tau the
    knee (``saturation_epoch``) of y over epochs ``0 .. t_s``, where ``t_s = settled_epoch(y, plateau)`` is the first
    epoch by which a plateau of ``plateau`` epochs follows the knee, or ``plateau`` itself if y rose by less than
    ``quiet_rise`` over its first ``plateau`` epochs (all of y if neither happens, or if plateau is None). Because tau
    never depends on epochs after t_s, copies stopped there give the same exponent.
    ``stopped_at``: the copies were stopped after this epoch (later entries are NaN and ignored).

    ``records_per_epoch`` r: the distances hold r records an epoch (shape (M, T r + 1)); ``window`` and ``plateau``
    stay in epochs, ``stopped_at`` counts records, and the exponent is per epoch. ``steps_per_record``: optimiser
    steps between records, which decides whether a fast expansion can be unresolved (``LocalExponent.unresolved``).
    """
    r = int(records_per_epoch)
    if r < 1:
        raise ValueError(f"records_per_epoch must be an integer >= 1; got {records_per_epoch}")
    d = np.asarray(distance, dtype=float)
    if stopped_at is not None and stopped_at >= 0:
        d = d[:, :stopped_at + 1]
    y, n_copies = mean_log_distance(d)
    if n_copies == 0 or y.size < 3:
        return LocalExponent(np.nan, np.nan, np.nan, np.nan, 0, y.size - 1, n_copies, False, y, r, steps_per_record)
    if window is None:
        settled = settled_epoch(y, plateau * r, quiet_rise=quiet_rise) if plateau else None
        start, stop = 0, saturation_epoch(y if settled is None else y[:settled + 1])
    else:
        start, stop = int(window[0]) * r, int(window[1]) * r
        if not 0 <= start < stop <= y.size - 1 or stop - start < 2:
            raise ValueError(f"window must satisfy 0 <= start, start + 2 <= stop <= T = {(y.size - 1) // r} "
                             f"(epochs); got {window}")
    t = np.arange(start, stop + 1) / r
    slope, intercept, r2, stderr = fit_line(t, y[start:stop + 1])
    return LocalExponent(slope, intercept, r2, stderr, start, stop, n_copies,
                         bool(r2 > r2_min and slope > lambda_min), y, r, steps_per_record)


@dataclass(frozen=True)
class NetworkExponent:
    """lambda_NMLE and p over a set S of initial conditions.

    Attributes:
        mean: lambda_NMLE, the mean of the local exponents that could be fitted and are resolved.
        std: their standard deviation (the paper's error bar; NaN from a single one).
        ci_low, ci_high: bootstrap confidence interval of the mean (``confidence`` level).
        p: percentage of those initial conditions whose local exponent is positive (NaN when there are none).
        n_fitted: initial conditions that entered; n_excluded: those left out because nothing could be fitted (all
            copies diverged or at d = 0); the unresolved ones (``n_unresolved``) are left out too.
        local: the per-initial-condition fits.
    """

    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float
    p: float
    n_fitted: int
    n_excluded: int
    local: tuple[LocalExponent, ...]

    @property
    def exponents(self) -> np.ndarray:
        return np.array([f.exponent for f in self.local])

    @property
    def n_positive(self) -> int:
        """Positive local exponents among those that entered p (fitted and resolved)."""
        return sum(f.positive for f in self.local if f.measured)

    @property
    def n_unresolved(self) -> int:
        """Local exponents whose exponential phase was too short for the records (``LocalExponent.unresolved``)."""
        return sum(f.unresolved for f in self.local)

    def p_interval(self, confidence: float | None = None) -> tuple[float, float]:
        """Wilson interval of p in percent (scipy.stats.binomtest), at ``confidence`` (default: this fit's);
        (0, 100) when nothing could be fitted."""
        from scipy import stats

        if self.n_fitted == 0:
            return 0.0, 100.0
        ci = stats.binomtest(self.n_positive, self.n_fitted).proportion_ci(confidence or self.confidence,
                                                                           method="wilson")
        return 100 * float(ci.low), 100 * float(ci.high)

    def histogram(self, bins=20) -> tuple[np.ndarray, np.ndarray]:
        """Counts and bin edges of the fitted local exponents."""
        values = self.exponents[np.isfinite(self.exponents)]
        return np.histogram(values, bins=bins)


def network_exponent(distance: np.ndarray, *, window=None, r2_min: float = R2_MIN, lambda_min: float = LAMBDA_MIN,
                     plateau: int | None = PLATEAU, stopped_at=None, confidence: float = CONFIDENCE,
                     n_bootstrap: int = 2000, seed: int = 0, quiet_rise: float | None = QUIET_RISE,
                     records_per_epoch: int = 1, steps_per_record: int | None = None) -> NetworkExponent:
    """lambda_NMLE = <lambda_Omega(0)> over S, with its spread, a bootstrap CI and p (percentage positive).

    ``distance`` has shape (S, M, T + 1), as ``Records.distance`` of the groups of one learning rate, and
    ``stopped_at`` (S,) as ``Records.copies_stopped_at`` (-1: ran to the end); ``records_per_epoch`` as
    ``Records.per_epoch`` and ``steps_per_record`` (see ``local_exponent``).
    """
    distance = np.asarray(distance, dtype=float)
    stops = np.full(distance.shape[0], -1) if stopped_at is None else np.asarray(stopped_at)
    fits = tuple(local_exponent(d, window=window, r2_min=r2_min, lambda_min=lambda_min, plateau=plateau,
                                stopped_at=int(s), quiet_rise=quiet_rise, records_per_epoch=records_per_epoch,
                                steps_per_record=steps_per_record)
                 for d, s in zip(distance, stops))
    # An unresolved fit (its expansion fell between a few records) is not a measurement: it enters neither the
    # mean nor p, and is counted by n_unresolved.
    v = np.array([f.exponent for f in fits if f.measured])
    excluded = sum(not np.isfinite(f.exponent) for f in fits)
    n = v.size
    if n == 0:
        return NetworkExponent(np.nan, np.nan, np.nan, np.nan, confidence, np.nan, 0, excluded, fits)
    lo, hi = _mean_interval(v, confidence, n_bootstrap, seed)
    positive = sum(f.positive for f in fits if f.measured)
    return NetworkExponent(float(v.mean()), float(v.std(ddof=1)) if n > 1 else np.nan, float(lo), float(hi),
                           confidence, 100 * positive / n, n, excluded, fits)


def _mean_interval(values: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (scipy.stats.bootstrap); NaN (undefined) where the values do not vary or
    there is one, since no resample could then differ and a point would claim certainty."""
    from scipy import stats

    if values.size < 2 or np.ptp(values) == 0:
        return float("nan"), float("nan")
    result = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                             method="BCa", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
