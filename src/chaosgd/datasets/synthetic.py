"""A small synthetic classification task for fast tests and demos."""

from __future__ import annotations

import numpy as np

from chaosgd.datasets.base import Dataset


def make_blobs(*, n_train: int = 200, n_test: int = 100, n_features: int = 8, n_classes: int = 3,
               separation: float = 2.0, seed: int = 0) -> Dataset:
    """Gaussian clusters: class ``c`` is N(mu_c, I) with centres ``mu_c`` drawn from N(0, separation^2 I).

    Labels are balanced (round robin); train and test come from the same distribution.
    """
    if min(n_train, n_test, n_features) < 1 or n_classes < 2:
        raise ValueError("need n_train, n_test, n_features >= 1 and n_classes >= 2")
    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((n_classes, n_features))

    def draw(n):
        y = np.arange(n) % n_classes
        return centres[y] + rng.standard_normal((n, n_features)), y

    x_train, y_train = draw(n_train)
    x_test, y_test = draw(n_test)
    return Dataset("blobs", x_train, y_train, x_test, y_test, n_classes)
