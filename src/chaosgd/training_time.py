"""Training time: the epoch at which a reference network reaches a target test accuracy, as survival data.

An initial condition that never reaches the target within the epoch budget is *right-censored*: all we know is that
its time exceeds the budget. A mean over those that did reach it is biased (on Iris at eta = 1 it called 2 of 50
networks "2.5 epochs" and ignored the 48 that never got there), so summaries are censoring-aware: the Kaplan-Meier
curve of "not yet at the target" (scipy.stats.ecdf), its median, the restricted mean time to target up to the
budget (RMST), and the fraction that reached it, each with a confidence interval.

First passage (``hold = 1``, the paper's) counts the first epoch with accuracy >= target; ``hold = k`` the first
epoch of k consecutive epochs at or above it, so that a network touching the target for one epoch does not count.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from chaosgd.defaults import CONFIDENCE


@dataclass(frozen=True)
class Survival:
    """Censoring-aware summary of times to target over a set of initial conditions.

    Attributes:
        times, survival, low, high: the Kaplan-Meier step function S(t) = P(target not yet reached by epoch t),
            right-continuous, with its pointwise confidence band (log-log), at the epochs where it may step.
        horizon: the last epoch at which a passage could be observed (budget - hold + 1); censored times sit here.
        n, n_reached: initial conditions, and how many reached the target by the horizon.
        reached_low, reached_high: Wilson interval of the fraction reached.
        median, median_low, median_high: the median time to target and its interval (read off the band where it
            crosses 1/2, as lifelines does); ``inf`` where S stays above 1/2 as far as it is known (through
            ``time_to_accuracy``: up to the horizon, "more than the budget").
        rmst, rmst_low, rmst_high: restricted mean time to target, E[min(tau, horizon)] = integral of S from 0 to
            the horizon (S held at its last value past the last observation), with a normal interval from its
            Kaplan-Meier variance (Klein & Moeschberger, sec. 4.5), clipped to [0, horizon]. Where that variance
            is 0 (no network reached the target, or all at the same epoch) the interval is NaN, undefined, rather
            than a width of 0 that would claim certainty from however few networks.
        confidence: level of every interval.
    """

    times: np.ndarray
    survival: np.ndarray
    low: np.ndarray
    high: np.ndarray
    horizon: int
    n: int
    n_reached: int
    reached_low: float
    reached_high: float
    median: float
    median_low: float
    median_high: float
    rmst: float
    rmst_low: float
    rmst_high: float
    confidence: float

    @property
    def reached(self) -> float:
        return self.n_reached / self.n if self.n else float("nan")


@dataclass(frozen=True)
class TrainingTime:
    """Passage epochs of the test accuracy through ``target``.

    Attributes:
        epoch: the passage epoch t (first epoch of ``hold`` consecutive ones with test accuracy >= target), as
            float; NaN where censored.
        censored: True where no passage was seen by the horizon (networks that diverged before one included).
        target: the target accuracy, a fraction in (0, 1].
        budget: the last recorded epoch T.
        hold: epochs the accuracy must stay at or above the target (1: first passage).
    """

    epoch: np.ndarray
    censored: np.ndarray
    target: float
    budget: int
    hold: int = 1

    @property
    def n_censored(self) -> int:
        return int(self.censored.sum())

    @property
    def horizon(self) -> int:
        """The last epoch at which a passage can be seen: a held stretch must fit in the budget."""
        return self.budget - self.hold + 1

    def mean(self) -> float:
        """The paper's <tau>: the mean over the initial conditions that reached the target (NaN if none did).
        Biased where some are censored; prefer ``survival()``."""
        reached = self.epoch[~self.censored]
        return float(reached.mean()) if reached.size else float("nan")

    def standard_error(self) -> float:
        reached = self.epoch[~self.censored]
        return float(reached.std(ddof=1) / np.sqrt(reached.size)) if reached.size > 1 else float("nan")

    def survival(self, confidence: float = CONFIDENCE) -> Survival:
        """Kaplan-Meier curve, median, RMST and fraction reached, with intervals at ``confidence``."""
        return survival(self.epoch[~self.censored], np.full(self.n_censored, self.horizon), horizon=self.horizon,
                        confidence=confidence)

    def describe(self, confidence: float = CONFIDENCE) -> str:
        n = self.epoch.size
        passage = f"{self.target:.0%}" + (f" held {self.hold} epochs" if self.hold > 1 else "")
        if self.n_censored == n:
            return f"never reached {passage} within {self.budget} epochs ({n}/{n} censored)"
        s = self.survival(confidence)
        median = f"> {self.horizon}" if math.isinf(s.median) else f"{s.median:g}"
        interval = f" [{s.rmst_low:.1f}, {s.rmst_high:.1f}]" if math.isfinite(s.rmst_low) else ""
        return f"{s.n_reached}/{n} reached {passage}; median {median}, restricted mean {s.rmst:.1f}{interval} epochs"


def time_to_accuracy(test_accuracy: np.ndarray, target: float, *, hold: int = 1,
                     records_per_epoch: int = 1) -> TrainingTime:
    """First epoch t at which ``test_accuracy[..., t : t + hold] >= target`` throughout, over the last axis (epochs
    0 .. T). NaN accuracies (diverged networks) never count as reaching the target.

    ``records_per_epoch`` r: the last axis holds r records an epoch (T r + 1 entries); the passage is then the
    first record of a stretch at or above the target from t to t + hold - 1 epochs (r (hold - 1) + 1 records), in
    epochs (a multiple of 1/r)."""
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must be a fraction in (0, 1]; got {target}")
    r = int(records_per_epoch)
    acc = np.asarray(test_accuracy, dtype=float)
    if r < 1 or (acc.shape[-1] - 1) % r:
        raise ValueError(f"records_per_epoch must be an integer >= 1 that divides the {acc.shape[-1] - 1} recorded "
                         f"steps; got {records_per_epoch}")
    budget = (acc.shape[-1] - 1) // r
    if not 1 <= hold <= budget + 1:
        raise ValueError(f"hold must be an integer in [1, {budget + 1}] (the recorded epochs); got {hold}")
    at = np.nan_to_num(acc, nan=-1.0) >= target
    # held[..., i]: at the target for every record i .. i + width - 1 (a sliding minimum over the boolean record)
    width = r * (hold - 1) + 1
    held = np.lib.stride_tricks.sliding_window_view(at, width, axis=-1).all(axis=-1)
    censored = ~held.any(axis=-1)
    epoch = np.where(censored, np.nan, held.argmax(axis=-1) / r)
    return TrainingTime(epoch=epoch, censored=censored, target=float(target), budget=budget, hold=int(hold))


def survival(reached_at, censored_at, *, horizon: float, confidence: float = CONFIDENCE) -> Survival:
    """Survival summary of event times ``reached_at`` and right-censoring times ``censored_at`` (times > those), in
    epochs, restricted to the integer ``horizon`` (every time must lie in [0, horizon])."""
    from scipy import stats

    events = np.asarray(reached_at, dtype=float)
    cens = np.asarray(censored_at, dtype=float)
    n = events.size + cens.size
    if n == 0:
        raise ValueError("no initial conditions: a survival summary needs at least one time")
    if int(horizon) != horizon or horizon < 0:
        raise ValueError(f"the horizon is an epoch, an integer >= 0; got {horizon}")
    every = np.concatenate([events, cens])
    if not np.all((every >= 0) & (every <= horizon)):
        outside = every[(every < 0) | (every > horizon)]
        raise ValueError(f"every time must lie in [0, horizon = {horizon}]; got {outside}")
    if events.size:
        sf = stats.ecdf(stats.CensoredData(uncensored=events, right=cens)).sf
        with warnings.catch_warnings():  # scipy warns where the band is undefined (S = 0 or 1); handled below
            warnings.simplefilter("ignore", RuntimeWarning)
            band = sf.confidence_interval(confidence, method="log-log")
        times = sf.quantiles
        s = sf.probabilities
        # log-log bands are undefined where S is 0 or 1; there they collapse onto S itself
        low = np.where(np.isfinite(band.low.probabilities), band.low.probabilities, s)
        high = np.where(np.isfinite(band.high.probabilities), band.high.probabilities, s)
    else:
        times, s, low, high = np.array([horizon]), np.ones(1), np.ones(1), np.ones(1)
    n_reached = events.size
    ci = stats.binomtest(n_reached, n).proportion_ci(confidence, method="wilson")
    rmst, var = _restricted_mean(times, s, events, cens, horizon)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    # No spread (nobody reached the target, or all at one epoch): the normal interval would have width 0 however
    # few networks there are; it is undefined instead.
    half = z * math.sqrt(var) if var > 0 else math.nan
    return Survival(times=times, survival=s, low=low, high=high, horizon=int(horizon), n=n, n_reached=n_reached,
                    reached_low=float(ci.low), reached_high=float(ci.high), median=_crossing(times, s),
                    median_low=_crossing(times, low), median_high=_crossing(times, high), rmst=rmst,
                    rmst_low=max(0.0, rmst - half) if var > 0 else math.nan,
                    rmst_high=min(float(horizon), rmst + half) if var > 0 else math.nan,
                    confidence=confidence)


def _crossing(times: np.ndarray, s: np.ndarray) -> float:
    """The first time at which a right-continuous step function falls to 1/2 or below; inf if it never does."""
    below = np.flatnonzero(s <= 0.5)
    return float(times[below[0]]) if below.size else math.inf


def _restricted_mean(times: np.ndarray, s: np.ndarray, events: np.ndarray, cens: np.ndarray,
                     horizon: float) -> tuple[float, float]:
    """RMST = integral over [0, horizon] of the Kaplan-Meier step function (1 before ``times[0]``, ``s[i]`` on
    [times[i], times[i + 1])), and its variance sum_i A_i^2 d_i / (Y_i (Y_i - d_i)) over the event times t_i, with d_i
    events at t_i, Y_i at risk just before it and A_i the area under S from t_i to the horizon."""
    pieces = s * np.diff(np.append(times, horizon))
    rmst = float(times[0] + pieces.sum())
    event_times, d = np.unique(events, return_counts=True)
    if event_times.size == 0:
        return rmst, 0.0
    area_after = np.cumsum(pieces[::-1])[::-1][np.searchsorted(times, event_times)]
    everyone = np.sort(np.concatenate([events, cens]))
    at_risk = everyone.size - np.searchsorted(everyone, event_times, side="left")  # times not before t_i
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(at_risk > d, area_after ** 2 * d / (at_risk * (at_risk - d)), 0.0)
    return rmst, float(terms.sum())
