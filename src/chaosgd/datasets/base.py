"""A classification data set as plain arrays, and where data sets are looked for on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chaosgd.errors import ChaosgdError

DATA_ENV = "CHAOSGD_DATA"


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays of one classification task.

    ``x_*`` are float arrays of shape ``(n, *example_shape)`` (images are ``(n, height, width, channels)``),
    ``y_*`` integer class labels in ``0 .. n_classes - 1``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.example_shape))

    def arrays(self, dtype="float64") -> dict[str, np.ndarray]:
        """The data pytree the classification objective reads: inputs in ``dtype``, labels as int32."""
        return {"x_train": self.x_train.astype(dtype, copy=False), "y_train": self.y_train.astype(np.int32),
                "x_test": self.x_test.astype(dtype, copy=False), "y_test": self.y_test.astype(np.int32)}

    def standardized(self) -> "Dataset":
        """Inputs shifted and scaled per feature by the training set's mean and standard deviation.

        Features that are constant on the training set (MNIST's border pixels) are only shifted.
        """
        mean = self.x_train.mean(axis=0)
        std = self.x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return Dataset(self.name, (self.x_train - mean) / std, self.y_train, (self.x_test - mean) / std,
                       self.y_test, self.n_classes)


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder data sets are read from: ``path`` if given, else ``$CHAOSGD_DATA``, else ``~/.chaosgd/data``."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path.home() / ".chaosgd" / "data"


def data_dir_source(path: str | os.PathLike | None = None) -> str:
    """Where ``data_dir(path)`` comes from, for messages: the option, the environment variable, or the default."""
    if path is not None:
        return "from --data-dir / data.path"
    return f"from ${DATA_ENV}" if os.environ.get(DATA_ENV) else f"the default; ${DATA_ENV} is not set"


class DataNotFoundError(ChaosgdError, FileNotFoundError):
    """A data set's files are not where chaosgd looked; the message says where it looked and how to get them."""
