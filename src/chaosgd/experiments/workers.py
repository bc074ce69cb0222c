"""What runs inside worker processes, and the environment they are started in: single-threaded, with their share
of the memory budget, ignoring Ctrl-C (their parent handles it), dying with their parent, and reporting progress
to it through a queue."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager


def call(fn, key, args):
    """What a worker runs: ``fn`` with a progress function that sends increments to the parent, at most every
    half second."""
    last, pending = [time.monotonic()], [0]

    def progress(n):
        pending[0] += n
        if _reports is not None and time.monotonic() - last[0] > 0.5:
            _reports.put((key, pending[0]))
            last[0], pending[0] = time.monotonic(), 0

    try:
        return fn(*args, progress=progress)
    finally:
        if _reports is not None and pending[0]:
            _reports.put((key, pending[0]))


_reports = None  # in a worker process: the queue to the parent


def init(parent: int, reports) -> None:
    """In each worker: leave Ctrl-C to the parent, and die with it."""
    global _reports
    _reports = reports
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: Linux only
    except (OSError, AttributeError):
        pass

    def watch():  # elsewhere (and as a second guard): notice that the parent is gone
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="chaosgd-parent-watch", daemon=True).start()


@contextmanager
def environment(workers: int):
    """While open, processes started from here run single-threaded XLA and BLAS (n processes on n cores, not n x n
    threads) and share this machine's memory budget (``engine.default_memory_budget()``) equally."""
    from chaosgd.engine import default_memory_budget

    env = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                         "intra_op_parallelism_threads=1").strip(),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "CHAOSGD_MEMORY_BUDGET": str(int(default_memory_budget() / max(1, workers)))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
