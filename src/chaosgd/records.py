"""What a run of the engine returns: plain numpy arrays with named axes.

Axes: ``group`` (an initial condition at one learning rate), ``copy`` (0 is the reference, 1..M the perturbed
copies), ``epoch`` (t = 0 .. T; entry t describes the parameters theta(t), before step t). Entries of members that
had diverged by epoch t are NaN; ``diverged_at`` holds the first epoch whose state was not finite (-1: never).

With r = ``records_per_epoch`` > 1 (minibatches recorded every ``steps_per_epoch / r`` steps), the ``epoch`` axis
holds r records an epoch, entry i at epoch i / r (``Records.time``), and every index into it (``diverged_at``,
``*_stopped_at``, ``*_computed_epochs``) counts records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from chaosgd.atomic import atomic_write

DIMS = {
    "eta": ("group", "copy"),
    "initial_condition": ("group",),
    "loss": ("group", "copy", "epoch"),
    "train_accuracy": ("group", "copy", "epoch"),
    "test_accuracy": ("group", "epoch"),
    "distance": ("group", "perturbed", "epoch"),
    "diverged_at": ("group", "copy"),
    "copies_stopped_at": ("group",),
    "copies_computed_epochs": ("group",),
    "references_stopped_at": ("group",),
    "references_computed_epochs": ("group",),
    "steps_per_epoch": ("group",),
    "records_per_epoch": ("group",),
}


@dataclass(frozen=True)
class Records:
    """Per-epoch records of an ensemble run; see the module docstring for the axes.

    Attributes:
        eta: learning rate of every member.
        initial_condition: index of each group's initial condition in its seed's sequence.
        loss, train_accuracy: full-batch training loss and accuracy of every member, before each step.
        test_accuracy: test accuracy of each group's reference network (copy 0).
        distance: L1 distance ``d_j(t) = sum_k |w_k(t) - w_k^(j)(t)|`` of perturbed copy j to its reference (over
            the parameters; with ``engine.run(distance="state")`` over the optimiser's state too).
        diverged_at: first epoch at which a member's loss or parameters were not finite; -1 if never.
        copies_stopped_at: last epoch recorded for each group's perturbed copies when they were stopped early
            (``engine.run(stop_copies=...)``); -1 if they ran to the end.
        copies_computed_epochs: epochs each group's copies actually took (they may run a few epochs past
            their stop before the engine regroups its batches).
        references_stopped_at: last epoch recorded for each reference stopped early (``engine.run(
            stop_references_at=...)``); -1 if it ran to the end.
        references_computed_epochs: epochs each reference actually took.
        steps_per_epoch: optimiser steps per epoch (1 for full batches; ceil(N / B) for minibatches of B): an
            epoch is one pass over the N training examples whatever the batch size, ``epoch * steps_per_epoch``
            the steps taken.
        records_per_epoch: records per epoch r (1: one per epoch, before each epoch's first step).
    """

    eta: np.ndarray
    initial_condition: np.ndarray
    loss: np.ndarray
    train_accuracy: np.ndarray
    test_accuracy: np.ndarray
    distance: np.ndarray
    diverged_at: np.ndarray
    copies_stopped_at: np.ndarray
    copies_computed_epochs: np.ndarray
    references_stopped_at: np.ndarray
    references_computed_epochs: np.ndarray
    steps_per_epoch: np.ndarray
    records_per_epoch: np.ndarray

    @property
    def per_epoch(self) -> int:
        """r, the records per epoch (one value for the whole ensemble)."""
        values = np.unique(self.records_per_epoch)
        if values.size > 1:
            raise ValueError(f"records of runs with different records per epoch ({values}) have no common time axis")
        return int(values[0]) if values.size else 1

    @property
    def steps_per_record(self) -> int | None:
        """Optimiser steps between two records (1: every step recorded, as with full batches); None when the groups
        differ."""
        values = np.unique(np.asarray(self.steps_per_epoch) // self.per_epoch)
        return int(values[0]) if values.size == 1 else None

    @property
    def epochs(self) -> int:
        """Number of epochs T (records hold T r + 1 entries, t = 0, 1/r, .. T)."""
        return (self.loss.shape[-1] - 1) // self.per_epoch

    @property
    def time(self) -> np.ndarray:
        """The epoch of each record: 0, 1/r, 2/r, .. T."""
        return np.arange(self.loss.shape[-1]) / self.per_epoch

    @property
    def network_epochs(self) -> int:
        """Network-epochs computed: references and copies as long as they actually ran."""
        records = self.references_computed_epochs.sum() + self.n_copies * self.copies_computed_epochs.sum()
        return int(round(records / self.per_epoch))

    @property
    def naive_network_epochs(self) -> int:
        """What running every member for every epoch costs."""
        return int(self.eta.size * self.epochs)

    @property
    def n_copies(self) -> int:
        """M, the number of perturbed copies per initial condition."""
        return self.distance.shape[1]

    def dims(self, name: str) -> tuple[str, ...]:
        return DIMS[name]

    def save(self, path: str | Path) -> Path:
        """Write all arrays to one ``.npz`` file (numpy's open format), with their axis names, atomically."""
        return atomic_write(path, lambda f: np.savez(f, **self.arrays()))

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by field name, plus ``dims`` (the axis names as JSON): what ``save`` writes."""
        return {"dims": np.array(json.dumps(DIMS)), **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def load(cls, path: str | Path) -> "Records":
        with np.load(path) as z:
            return cls.from_arrays(z)

    @classmethod
    def from_arrays(cls, arrays) -> "Records":
        """Records from a mapping of arrays by field name (``arrays()``, or an open ``.npz``)."""
        values = {f.name: np.asarray(arrays[f.name]) for f in fields(cls) if f.name in arrays}
        n_groups, epochs = values["loss"].shape[0], values["loss"].shape[-1] - 1
        values.setdefault("copies_stopped_at", np.full(n_groups, -1))  # files written before these existed
        values.setdefault("copies_computed_epochs", np.full(n_groups, epochs))
        values.setdefault("references_stopped_at", np.full(n_groups, -1))
        values.setdefault("references_computed_epochs", np.full(n_groups, epochs))
        values.setdefault("steps_per_epoch", np.ones(n_groups, dtype=np.int64))
        values.setdefault("records_per_epoch", np.ones(n_groups, dtype=np.int64))
        return cls(**values)

    def to_xarray(self):
        """The records as an ``xarray.Dataset`` with named dimensions (needs xarray: ``pip install xarray``)."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("Records.to_xarray needs xarray: pip install xarray") from None
        return xr.Dataset({f.name: (DIMS[f.name], getattr(self, f.name)) for f in fields(self)},
                          coords={"epoch": self.time})

    def select(self, groups) -> "Records":
        """The records of the chosen groups (an index array or boolean mask over the group axis)."""
        return Records(**{f.name: getattr(self, f.name)[groups] for f in fields(self)})


def concatenate(parts: list[Records]) -> Records:
    """Join records along the group axis."""
    return Records(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Records)})
