"""Fisher's Iris data set, shipped with chaosgd.

Source: R. A. Fisher, "The use of multiple measurements in taxonomic problems", Annals of Eugenics 7 (1936) 179-188,
as distributed by the UCI Machine Learning Repository (with the two corrections to sample 35 and 38 that restore
Fisher's published values). 150 examples, 4 features in cm, 3 species with 50 examples each.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from chaosgd.datasets.base import Dataset

SPECIES = ("setosa", "versicolor", "virginica")


def load_iris(*, test_size: int = 30, seed: int = 0) -> Dataset:
    """Iris with a stratified train/test split: ``test_size`` examples (the paper's 30) split evenly over classes.

    The split is fixed by ``seed``; features are the raw measurements in cm (no standardisation, as in the paper's
    other tasks; use ``Dataset.standardized()`` for the alternative).
    """
    text = resources.files("chaosgd.datasets").joinpath("iris.csv").read_text()
    rows = [line.split(",") for line in text.strip().splitlines()[1:]]
    x = np.array([[float(v) for v in row[:4]] for row in rows])
    y = np.array([SPECIES.index(row[4]) for row in rows])
    n_classes = len(SPECIES)
    if test_size % n_classes or not 0 < test_size < len(y):
        raise ValueError(f"test_size must be a multiple of {n_classes} between 0 and {len(y)}; got {test_size}")
    rng = np.random.default_rng(seed)
    test = np.concatenate([rng.choice(np.flatnonzero(y == c), test_size // n_classes, replace=False)
                           for c in range(n_classes)])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    return Dataset("iris", x[~is_test], y[~is_test], x[is_test], y[is_test], n_classes)
