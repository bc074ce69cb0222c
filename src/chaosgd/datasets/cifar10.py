"""CIFAR-10 from its binary version (``cifar-10-batches-bin``); the pickled Python version is never read.

Each record is 1 label byte and 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32).
"""

from __future__ import annotations

import numpy as np

from chaosgd.datasets.base import DataNotFoundError, Dataset, data_dir, data_dir_source
from chaosgd.datasets.idx import IDXError, file_error, read_bytes

TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILES = ("test_batch.bin",)
RECORD = 1 + 3 * 32 * 32


def _read_batches(folder, names):
    chunks = []
    for name in names:
        raw = read_bytes(folder / name, dataset="cifar10")
        if len(raw) % RECORD:
            raise file_error(folder / name, f"size {len(raw)} is not a multiple of the {RECORD}-byte CIFAR-10 "
                                            f"record; the file is truncated or not the binary version", "cifar10")
        chunks.append(np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD))
    records = np.concatenate(chunks)
    labels = records[:, 0].astype(np.int64)
    if labels.size and labels.max() > 9:
        raise IDXError(f"{folder}: CIFAR-10 labels must be 0..9; found {labels.max()}; replace the files with "
                       f"`chaosgd data fetch cifar10` or good copies")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images.astype(np.float64) / 255.0, labels


def load_cifar10(path=None) -> Dataset:
    """CIFAR-10, pixels scaled to [0, 1], images ``(n, 32, 32, 3)``; from ``<data_dir>/cifar10/`` (or its
    ``cifar-10-batches-bin/`` subfolder, as the official archive unpacks)."""
    root = data_dir(path)
    candidates = [root / "cifar10", root / "cifar10" / "cifar-10-batches-bin", root / "cifar-10-batches-bin"]
    for folder in candidates:
        if all((folder / n).is_file() for n in TRAIN_FILES + TEST_FILES):
            x_train, y_train = _read_batches(folder, TRAIN_FILES)
            x_test, y_test = _read_batches(folder, TEST_FILES)
            return Dataset("cifar10", x_train, y_train, x_test, y_test, 10)
    raise DataNotFoundError(
        f"cifar10: the binary batches ({', '.join(TRAIN_FILES + TEST_FILES)}) were not found in any of "
        f"{', '.join(map(str, candidates))} ({data_dir_source(path)}). Point --data-dir or $CHAOSGD_DATA at the "
        "folder that holds 'cifar10/', "
        f"or download them with `chaosgd data fetch cifar10`.")
