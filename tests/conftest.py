import os
import tempfile
from pathlib import Path

import pytest

# The suite's time is mostly XLA compiling the same small programs again: in each test process (pytest-xdist's),
# each subprocess (the command line) and each sweep worker. JAX's persistent compilation cache shares them (it
# stores compiled code; results are unchanged). Set before JAX is imported, and inherited by subprocesses.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "chaosgd-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Under pytest-xdist each test process gets one thread for BLAS and chaosgd's kernels, as the processes executor
# gives each of its workers: side by side, threads of their own would contend for the same cores. The variable
# reaches what loads later (scipy's OpenBLAS, which chaosgd.gemm calls; the kernels; subprocesses); numpy's
# OpenBLAS is already loaded by then (a pytest plugin imports numpy), so it is limited directly. Results do not
# depend on it; the kernels' split over threads has a test of its own (test_convolution.py).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ["OMP_NUM_THREADS"]))

import jax  # noqa: E402

# The tests compute their own references in JAX (explicit Hessians, XLA's convolution, plain loops), in float64 as
# chaosgd does; chaosgd itself needs no such setting (tests/test_package.py checks it with float64 off, and every
# command-line test runs in a process of its own).
jax.config.update("jax_enable_x64", True)

from chaosgd.datasets import make_blobs  # noqa: E402


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
