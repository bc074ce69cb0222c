"""MNIST and Fashion-MNIST from their IDX files in ``<data_dir>/<name>/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chaosgd.datasets.base import DataNotFoundError, Dataset, data_dir
from chaosgd.datasets.idx import IDXError, read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_DATASETS = ("mnist", "fashion-mnist")


def find_file(folders: list[Path], stem: str, dataset: str) -> Path:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    looked = ", ".join(str(f) for f in folders)
    raise DataNotFoundError(
        f"{dataset}: file {stem}[.gz] not found (looked in {looked}). Put the data set's files there, point "
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
    arrays = {key: read_idx(find_file(folders, stem, name), ndim=3 if key.endswith("images") else 1)
              for key, stem in FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise IDXError(f"{name}: {split} set has {len(images)} images but {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise IDXError(f"{name}: {split} labels must be 0..9; found {labels.max()}")

    def scale(images):
        return (images.astype(np.float64) / 255.0)[..., None]

    return Dataset(name, scale(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
                   scale(arrays["test_images"]), arrays["test_labels"].astype(np.int64), 10)
