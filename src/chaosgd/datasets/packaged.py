"""Data sets other packages ship: scikit-learn's bundled copies of three UCI data sets, read offline.

Each is a data set by name (``data.name``), nothing downloaded at run time:

- ``sklearn:wine``: UCI Wine (Forina et al., PARVUS; Aeberhard, Coomans and de Vel 1992): 178 wines, 13 chemical
  measurements, 3 cultivars.
- ``sklearn:breast_cancer``: UCI Breast Cancer Wisconsin (Diagnostic) (Street, Wolberg and Mangasarian 1993): 569
  tumours, 30 features of cell nuclei, 2 classes (0 malignant, 1 benign).
- ``sklearn:digits``: UCI Optical Recognition of Handwritten Digits (Alpaydin and Kaynak 1998), its test part:
  1,797 images of 8 x 8 pixels, 10 digits. Given as ``(n, 8, 8, 1)`` images (MNIST's layout), pixels (counts
  0 .. 16) divided by 16 into [0, 1]: the MLP flattens them, the CNN takes them as they are.

The train/test split is stratified: a test fraction of 20 %, that is round(0.2 x class size) examples of each class
(wine 36 of 178, breast_cancer 113 of 569, digits 359 of 1,797), drawn by ``seed`` (``data.seed``) as Iris's split
is; the training examples are then in an order also drawn by ``seed`` (the files hold wine sorted by class), so
``data.n_train`` keeps a sample of every class. Features are raw, as the paper keeps Iris's; wine's and
breast_cancer's features differ in scale by three to five orders of magnitude (standard deviations from 0.12 to 317
and from 0.003 to 564), so ``data.standardize = true`` is advisable for them.

scikit-learn is an optional extra: ``pip install 'chaosgd[datasets]'``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chaosgd.datasets.base import Dataset
from chaosgd.datasets.user import from_arrays
from chaosgd.errors import ChaosgdError

PREFIX = "sklearn:"
TEST_FRACTION = 0.2
EXTRA = "pip install 'chaosgd[datasets]'"


@dataclass(frozen=True)
class Packaged:
    """One data set another package ships: where it is read from, and what it holds."""

    loader: str  # the function of sklearn.datasets that reads it
    n_classes: int
    description: str
    image: tuple[int, int] | None = None  # (height, width) of an image data set, one channel
    scale: float = 1.0  # inputs are divided by this (the digits' pixel counts 0 .. 16 -> [0, 1])


PACKAGED: dict[str, Packaged] = {
    f"{PREFIX}wine": Packaged("load_wine", 3, "UCI Wine: 178 x 13 chemical measurements, 3 cultivars"),
    f"{PREFIX}breast_cancer": Packaged("load_breast_cancer", 2, "UCI Breast Cancer Wisconsin (Diagnostic): 569 x 30 "
                                                                "features of cell nuclei, malignant or benign"),
    f"{PREFIX}digits": Packaged("load_digits", 10, "UCI Optical Recognition of Handwritten Digits: 1,797 8x8 "
                                                   "images in [0, 1], 10 digits", image=(8, 8), scale=16.0),
}


class MissingExtraError(ChaosgdError, ImportError, ValueError):
    """A data set needs a package that is not installed; the message names the extra that installs it."""


def load_packaged(name: str, *, seed: int = 0) -> Dataset:
    """The packaged data set ``name`` (a key of ``PACKAGED``), split as the module's docstring says."""
    if name not in PACKAGED:
        raise ValueError(f"unknown data set {name!r}; the data sets of other packages are {', '.join(PACKAGED)}")
    spec = PACKAGED[name]
    try:
        import sklearn.datasets
    except ImportError:
        raise MissingExtraError(f"data set {name!r} is scikit-learn's bundled copy, and scikit-learn is not "
                                f"installed: {EXTRA}", name="sklearn") from None
    bunch = getattr(sklearn.datasets, spec.loader)()
    x = np.asarray(bunch.data, dtype=np.float64) / spec.scale
    y = np.asarray(bunch.target)
    if spec.image is not None:
        x = x.reshape(len(x), *spec.image, 1)
    train, test = split(y, seed=seed)
    data = from_arrays(x[train], y[train], x[test], y[test], name=name, n_classes=spec.n_classes)
    if np.unique(y).size != spec.n_classes:  # (a scikit-learn that ships other data: refused, never trained on)
        raise ValueError(f"{name}: scikit-learn's {spec.loader}() gave {np.unique(y).size} classes, expected "
                         f"{spec.n_classes}")
    return data


def split(y: np.ndarray, *, seed: int = 0, test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a stratified split: round(``test_fraction`` x class size) examples of each class
    to the test set, drawn by ``seed``; both in an order drawn by ``seed`` (classes interleaved)."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        k = int(np.floor(test_fraction * len(members) + 0.5))
        is_test[rng.choice(members, k, replace=False)] = True
    return rng.permutation(np.flatnonzero(~is_test)), rng.permutation(np.flatnonzero(is_test))
