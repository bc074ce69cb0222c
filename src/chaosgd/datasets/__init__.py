"""Data sets: Iris (shipped), MNIST, Fashion-MNIST and CIFAR-10 (from a folder), synthetic blobs, those other packages
ship (``sklearn:wine``, ``sklearn:breast_cancer``, ``sklearn:digits``), and a user's own (arrays, tensors, frames, a
``.npz`` file)."""

from __future__ import annotations

from chaosgd.datasets.base import DATA_ENV, DataNotFoundError, Dataset, data_dir
from chaosgd.datasets.cifar10 import load_cifar10
from chaosgd.datasets.idx import IDXError
from chaosgd.datasets.iris import load_iris
from chaosgd.datasets.mnist import load_idx_dataset
from chaosgd.datasets.packaged import PACKAGED, MissingExtraError, load_packaged
from chaosgd.datasets.synthetic import make_blobs
from chaosgd.datasets.user import DataError, as_dataset, file_sha256, from_arrays, load_npz

DATASETS = ("iris", "mnist", "fashion-mnist", "cifar10", "blobs", *PACKAGED, "npz")
# Classes of each data set, known without loading it (chance accuracy is 1 / classes).
CLASSES = {"iris": 3, "mnist": 10, "fashion-mnist": 10, "cifar10": 10, "blobs": 3,
           **{name: spec.n_classes for name, spec in PACKAGED.items()}}


def load(name: str, *, path=None, standardize: bool = False, seed: int = 0, sha256: str | None = None) -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``); ``path`` overrides ``$CHAOSGD_DATA``.

    ``seed`` fixes Iris's split, the blobs, and the split of the data sets other packages ship (``PACKAGED``);
    ``standardize`` rescales each feature by training-set statistics.
    ``"npz"``: ``path`` is the file (``load_npz``), ``sha256`` its expected digest.
    """
    if name == "iris":
        data = load_iris(seed=seed)
    elif name in ("mnist", "fashion-mnist"):
        data = load_idx_dataset(name, path)
    elif name == "cifar10":
        data = load_cifar10(path)
    elif name in PACKAGED:
        data = load_packaged(name, seed=seed)
    elif name == "blobs":
        data = make_blobs(seed=seed)
    elif name == "npz":
        if path is None:
            raise ValueError("the npz data set needs path= (data.path): the .npz file")
        data = load_npz(path, sha256=sha256)
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")
    return data.standardized() if standardize else data


__all__ = ["Dataset", "DATASETS", "CLASSES", "DATA_ENV", "DataError", "DataNotFoundError", "IDXError",
           "MissingExtraError", "PACKAGED", "as_dataset", "data_dir", "file_sha256", "from_arrays", "load",
           "load_iris", "load_idx_dataset", "load_cifar10", "load_npz", "load_packaged", "make_blobs"]
