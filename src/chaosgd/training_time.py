"""Training time: the first epoch at which a reference network reaches a target test accuracy.

An initial condition that never reaches the target within the epoch budget is *censored*: all we know is that its
time exceeds the budget. It gets no number; summaries report how many there were instead of averaging a cap in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainingTime:
    """First-passage epochs of the test accuracy through ``target``.

    Attributes:
        epoch: first epoch t with test accuracy >= target, as float; NaN where censored.
        censored: True where the target was not reached by epoch ``budget`` (including diverged networks).
        target: the target accuracy, a fraction in (0, 1].
        budget: the last recorded epoch T.
    """

    epoch: np.ndarray
    censored: np.ndarray
    target: float
    budget: int

    @property
    def n_censored(self) -> int:
        return int(self.censored.sum())

    def mean(self) -> float:
        """Mean over the uncensored initial conditions (NaN if all are censored); see ``n_censored``."""
        reached = self.epoch[~self.censored]
        return float(reached.mean()) if reached.size else float("nan")

    def standard_error(self) -> float:
        reached = self.epoch[~self.censored]
        return float(reached.std(ddof=1) / np.sqrt(reached.size)) if reached.size > 1 else float("nan")

    def describe(self) -> str:
        n = self.epoch.size
        if self.n_censored == n:
            return f"never reached {self.target:.0%} within {self.budget} epochs ({n}/{n} censored)"
        spread = "" if np.isnan(self.standard_error()) else f" ± {self.standard_error():.1f}"
        return (f"{self.mean():.1f}{spread} epochs to {self.target:.0%} "
                f"({self.n_censored}/{n} censored at {self.budget})")


def time_to_accuracy(test_accuracy: np.ndarray, target: float) -> TrainingTime:
    """First epoch at which ``test_accuracy[..., t] >= target``, over the last axis (epochs 0 .. T).

    NaN accuracies (diverged networks) never count as reaching the target.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must be a fraction in (0, 1]; got {target}")
    acc = np.asarray(test_accuracy, dtype=float)
    reached = np.nan_to_num(acc, nan=-1.0) >= target
    censored = ~reached.any(axis=-1)
    epoch = np.where(censored, np.nan, reached.argmax(axis=-1).astype(float))
    return TrainingTime(epoch=epoch, censored=censored, target=float(target), budget=acc.shape[-1] - 1)
