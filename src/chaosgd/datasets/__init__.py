"""Data sets: Iris (shipped), MNIST, Fashion-MNIST and CIFAR-10 (from a folder), and synthetic blobs."""

from __future__ import annotations

from chaosgd.datasets.base import DATA_ENV, DataNotFoundError, Dataset, data_dir
from chaosgd.datasets.cifar10 import load_cifar10
from chaosgd.datasets.idx import IDXError
from chaosgd.datasets.iris import load_iris
from chaosgd.datasets.mnist import load_idx_dataset
from chaosgd.datasets.synthetic import make_blobs

DATASETS = ("iris", "mnist", "fashion-mnist", "cifar10", "blobs")
# Classes of each data set, known without loading it (chance accuracy is 1 / classes).
CLASSES = {"iris": 3, "mnist": 10, "fashion-mnist": 10, "cifar10": 10, "blobs": 3}


def load(name: str, *, path=None, standardize: bool = False, seed: int = 0) -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``); ``path`` overrides ``$CHAOSGD_DATA``.

    ``seed`` fixes Iris's split and the blobs; ``standardize`` rescales each feature by training-set statistics.
    """
    if name == "iris":
        data = load_iris(seed=seed)
    elif name in ("mnist", "fashion-mnist"):
        data = load_idx_dataset(name, path)
    elif name == "cifar10":
        data = load_cifar10(path)
    elif name == "blobs":
        data = make_blobs(seed=seed)
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")
    return data.standardized() if standardize else data


__all__ = ["Dataset", "DATASETS", "CLASSES", "DATA_ENV", "DataNotFoundError", "IDXError", "data_dir", "load",
           "load_iris",
           "load_idx_dataset", "load_cifar10", "make_blobs"]
