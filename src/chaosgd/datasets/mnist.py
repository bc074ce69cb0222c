"""MNIST and Fashion-MNIST from their IDX files in ``<data_dir>/<name>/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chaosgd.datasets.base import DataNotFoundError, Dataset, data_dir, data_dir_source
from chaosgd.datasets.idx import IDXError, read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DATASETS = ("mnist", "fashion-mnist")


def find_file(folders: list[Path], stem: str, dataset: str, source: str = "") -> Path:
    candidates = [folder / name for folder in folders for name in (stem, stem + ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(f) for f in folders) + (f"; {source}" if source else "")
    # A folder (or other non-file) under the file's name is the likeliest reason a user who "has the files" sees this.
    blocked = "".join(f" {c} exists but is not a file." for c in candidates if c.exists())
    raise DataNotFoundError(
        f"{dataset}: file {stem}[.gz] not found (looked in {looked}).{blocked} Put the data set's files there, point "
        f"--data-dir or $CHAOSGD_DATA at the folder that holds '{dataset}/', or download them with "
        f"`chaosgd data fetch {dataset}`.")


def load_idx_dataset(name: str = "mnist", path=None) -> Dataset:
    """MNIST-format data set ``name`` with pixels scaled to [0, 1] (the paper's preprocessing), 28x28x1 images.

    Files are looked for in ``<data_dir>/<name>/`` and then in ``<data_dir>/`` itself.
    """
    if name not in IDX_DATASETS:
        raise ValueError(f"unknown IDX data set {name!r}; choose one of {list(IDX_DATASETS)}")
    root = data_dir(path)
    folders = [root / name, root]
    paths = {key: find_file(folders, stem, name, data_dir_source(path)) for key, stem in FILES.items()}
    arrays = {key: read_idx(file, ndim=3 if key.endswith("images") else 1, dataset=name)
              for key, file in paths.items()}
    remedy = f"replace the files with `chaosgd data fetch {name}` or good copies"
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise IDXError(f"{name}: {split} set has {len(images)} images but {len(labels)} labels "
                           f"({paths[f'{split}_images']}, {paths[f'{split}_labels']}); {remedy}")
        if labels.size and labels.max() > 9:
            raise IDXError(f"{paths[f'{split}_labels']}: {name} {split} labels must be 0..9; found {labels.max()}; "
                           f"{remedy}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise IDXError(f"{name}: training images are {arrays['train_images'].shape[1:]} pixels but test images "
                       f"{arrays['test_images'].shape[1:]}; {remedy}")

    def scale(images):
        return (images.astype(np.float64) / 255.0)[..., None]

    return Dataset(name, scale(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
                   scale(arrays["test_images"]), arrays["test_labels"].astype(np.int64), 10)
