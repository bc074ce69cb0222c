"""Data sets: Iris (shipped), MNIST, Fashion-MNIST and CIFAR-10 (from a folder), synthetic blobs, those other packages
ship (``sklearn:wine``, ``sklearn:breast_cancer``, ``sklearn:digits``), and a user's own (arrays, tensors, frames, a
``.npz`` file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from chaosgd.datasets.base import DATA_ENV, DataNotFoundError, Dataset, data_dir
from chaosgd.datasets.cifar10 import load_cifar10
from chaosgd.datasets.idx import IDXError
from chaosgd.datasets.iris import load_iris
from chaosgd.datasets.mnist import load_idx_dataset
from chaosgd.datasets.packaged import PACKAGED, MissingExtraError, load_packaged
from chaosgd.datasets.synthetic import make_blobs
from chaosgd.datasets.user import DataError, as_dataset, file_sha256, from_arrays, load_npz



@dataclass(frozen=True)
class Named:
    """What chaosgd knows of a data set by name, in one place: how it loads (``load(path, seed, sha256)``), its
    classes when known without loading it (chance accuracy is 1 / classes; None: its file says), and where it
    comes from — a folder or file (``data.path``), or nowhere the user names (shipped, generated, installed)."""

    load: Callable
    n_classes: int | None
    origin: str  # "folder", "file", or how it comes without one ("ships with chaosgd"), for messages
    seeded: bool = False  # data.seed draws it (its split, or the data themselves)

    @property
    def reads_path(self) -> bool:
        return self.origin in ("folder", "file")


def _npz(path, seed, sha256):
    if path is None:
        raise ValueError("the npz data set needs path= (data.path): the .npz file")
    return load_npz(path, sha256=sha256)


NAMED = {
    "iris": Named(lambda path, seed, sha256: load_iris(seed=seed), 3, "ships with chaosgd", seeded=True),
    "mnist": Named(lambda path, seed, sha256: load_idx_dataset("mnist", path), 10, "folder"),
    "fashion-mnist": Named(lambda path, seed, sha256: load_idx_dataset("fashion-mnist", path), 10, "folder"),
    "cifar10": Named(lambda path, seed, sha256: load_cifar10(path), 10, "folder"),
    "blobs": Named(lambda path, seed, sha256: make_blobs(seed=seed), 3, "is generated", seeded=True),
    **{name: Named(lambda path, seed, sha256, name=name: load_packaged(name, seed=seed), spec.n_classes,
                   "comes with scikit-learn", seeded=True) for name, spec in PACKAGED.items()},
    "npz": Named(_npz, None, "file"),
}
DATASETS = tuple(NAMED)
CLASSES = {name: named.n_classes for name, named in NAMED.items() if named.n_classes is not None}


def load(name: str, *, path=None, standardize: bool = False, seed: int = 0, sha256: str | None = None) -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``); ``path`` overrides ``$CHAOSGD_DATA``.

    ``seed`` fixes Iris's split, the blobs, and the split of the data sets other packages ship (``PACKAGED``);
    ``standardize`` rescales each feature by training-set statistics.
    ``"npz"``: ``path`` is the file (``load_npz``), ``sha256`` its expected digest.
    """
    if name not in NAMED:
        raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")
    data = NAMED[name].load(path, seed, sha256)
    return data.standardized() if standardize else data


__all__ = ["Dataset", "DATASETS", "NAMED", "CLASSES", "DATA_ENV", "DataError", "DataNotFoundError", "IDXError",
           "MissingExtraError", "PACKAGED", "as_dataset", "data_dir", "file_sha256", "from_arrays", "load",
           "load_iris", "load_idx_dataset", "load_cifar10", "load_npz", "load_packaged", "make_blobs"]
