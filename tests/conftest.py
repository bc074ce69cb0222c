import os
from pathlib import Path

import pytest

import chaosgd  # noqa: F401  (enables float64 before any test builds arrays)
from chaosgd.datasets import make_blobs


@pytest.fixture(scope="session")
def blobs():
    return make_blobs(n_train=120, n_test=60, n_features=6, n_classes=3, seed=1)


@pytest.fixture(scope="session")
def mnist_dir():
    """Folder holding ``mnist/``: $CHAOSGD_DATA; skip without it."""
    candidate = os.environ.get("CHAOSGD_DATA")
    if candidate and (Path(candidate) / "mnist").is_dir():
        return Path(candidate)
    pytest.skip("real MNIST not found: set CHAOSGD_DATA to a folder holding mnist/ (IDX files)")
