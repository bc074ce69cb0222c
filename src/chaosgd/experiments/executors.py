"""Where tasks run: in this process (``serial``), in local worker processes (``processes``), or on a Dask cluster
(``dask``). One ``map`` for all three, used by sweeps and the sweet-spot search alike.

``map`` keeps at most ``capacity`` tasks in flight and asks its source for the next one only when a slot is free, so
that tasks are claimed just before they run (several jobs can share a run folder) and an error or Ctrl-C leaves
nothing queued. It waits in short slices, so Ctrl-C and SIGTERM are seen within a second: in-flight work is then
abandoned (worker processes are killed, Dask futures cancelled) and the interruption propagates. A task that raises
stops the map at once with ``TaskFailed`` naming the task. Worker processes ignore Ctrl-C (their parent handles it),
run single-threaded (n processes on n cores), share the machine's memory budget, and die with their parent, even
after ``kill -9``.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable

_POLL = 0.25  # seconds between looks at the in-flight tasks, and at signals


class TaskFailed(RuntimeError):
    """A task raised: the message names the task and the error."""

    def __init__(self, key, error: BaseException | str):
        detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        super().__init__(f"task {key} failed: {detail}")
        self.key = key


class Executor:
    """Runs ``fn(*args, progress=report)`` for the items a source hands out; see the module docstring."""

    capacity = 1

    def map(self, fn: Callable, source: Callable, on_result: Callable, on_progress: Callable | None = None) -> None:
        """Run tasks until ``source()`` returns None and none is in flight.

        ``source()`` returns ``(key, args)``; ``on_result(key, result)`` is called in this thread as each task ends;
        ``on_progress(key, n)`` receives the increments that a task reports through its ``progress`` argument (None
        where the executor cannot relay them)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialExecutor(Executor):
    """One task at a time in this process. It runs in a thread so that this thread sees Ctrl-C at once; the task's
    per-epoch progress report then raises inside it, so the task stops within an epoch instead of running on."""

    def map(self, fn, source, on_result, on_progress=None):
        reports = queue.SimpleQueue()
        while (item := source()) is not None:
            key, args = item
            future, stop = Future(), threading.Event()

            def progress(n, key=key, stop=stop):
                if stop.is_set():
                    raise _Abandoned
                reports.put((key, n))

            def work(args=args, future=future, progress=progress):
                try:
                    future.set_result(fn(*args, progress=progress))
                except BaseException as error:  # handed to the waiting thread
                    future.set_exception(error)

            thread = threading.Thread(target=work, name=f"chaosgd-{key}", daemon=True)
            thread.start()
            try:
                while not future.done():
                    wait([future], timeout=_POLL)
                    _drain(reports, on_progress)
            except BaseException:
                stop.set()
                with _quiet_abandon():
                    thread.join(timeout=5)
                raise
            _drain(reports, on_progress)
            if future.exception() is not None:
                raise TaskFailed(key, future.exception())
            on_result(key, future.result())


class _Abandoned(Exception):
    """Raised in a task's progress report to stop it: its executor was interrupted."""


@contextmanager
def _quiet_abandon():
    """JAX logs every exception raised in a callback with its traceback; an abandoned task's is expected."""
    import logging

    def keep(record):
        return not (record.exc_info and isinstance(record.exc_info[1], _Abandoned))

    logger = logging.getLogger("jax._src.debugging")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


class ProcessExecutor(Executor):
    """Local worker processes, started once and kept (they keep their data and compiled code between tasks).

    A task whose worker dies (killed, out of memory) is run again, up to ``retries`` times."""

    def __init__(self, workers: int | None = None, retries: int = 2):
        self.capacity = max(1, int(workers or os.cpu_count() or 1))
        self.retries = retries
        self._pool = None
        self._reports = None

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self._reports = self._reports or context.Queue()
        for attempt in range(self.retries + 1):
            with worker_environment(self.capacity):
                self._pool = ProcessPoolExecutor(max_workers=self.capacity, mp_context=context,
                                                 initializer=_worker_init, initargs=(os.getpid(), self._reports))
                # Start every worker now, from this thread: they are told to die with it (PR_SET_PDEATHSIG).
                try:
                    for f in [self._pool.submit(os.getpid) for _ in range(self.capacity)]:
                        f.result()
                    return
                except BrokenProcessPool:  # a worker was killed while starting
                    self._kill()
        raise RuntimeError(f"worker processes died while starting, {self.retries + 1} times (killed, or out of "
                           "memory?)")

    def map(self, fn, source, on_result, on_progress=None):
        if self._pool is None:
            self._start()
        attempts: dict = {}
        in_flight: dict = {}
        try:
            while True:
                while len(in_flight) < self.capacity and (item := source()) is not None:
                    in_flight[self._pool.submit(_call, fn, *item)] = item
                if not in_flight:
                    return
                done, _ = wait(list(in_flight), timeout=_POLL, return_when=FIRST_COMPLETED)
                _drain(self._reports, on_progress)
                broken = False
                for future in done:
                    key, args = in_flight.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        in_flight[future] = (key, args)
                        continue
                    except Exception as error:
                        raise TaskFailed(key, error) from None
                    on_result(key, result)
                if broken:  # a worker died, and the pool with it: every task in flight is lost and run again
                    lost = list(in_flight.values())
                    for key, _ in lost:
                        attempts[key] = attempts.get(key, 0) + 1
                        if attempts[key] > self.retries:
                            raise TaskFailed(key, f"its worker process died {attempts[key]} times (killed, or out "
                                                  "of memory?)")
                    self._kill()
                    self._start()
                    in_flight = {self._pool.submit(_call, fn, *item): item for item in lost}
        except BaseException:
            self._kill()
            raise
        finally:
            _drain(self._reports, on_progress)

    def _kill(self):
        """Stop every worker now: in-flight tasks are abandoned, queued ones cancelled."""
        if self._pool is None:
            return
        processes = list(getattr(self._pool, "_processes", {}).values())  # the pool has no public kill
        for p in processes:
            p.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.join(timeout=5)
        self._pool = None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor(Executor):
    """A Dask cluster: the scheduler at ``scheduler``, or a LocalCluster of ``workers`` single-threaded processes.
    Tasks whose worker dies are retried by Dask (``retries``); progress within a task is not relayed."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, retries: int = 2):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise ValueError("the dask executor needs dask.distributed: pip install 'chaosgd[dask]'") from None
        self.retries = retries
        self._cluster = None
        if scheduler is None:
            n = max(1, int(workers or os.cpu_count() or 1))
            with worker_environment(n):
                self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True)
        self.client = Client(scheduler or self._cluster)

    @property
    def capacity(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def map(self, fn, source, on_result, on_progress=None):
        from dask.distributed import wait as dask_wait

        in_flight: dict = {}
        try:
            while True:
                capacity = self.capacity
                while len(in_flight) < capacity and (item := source()) is not None:
                    key, args = item
                    future = self.client.submit(_call, fn, key, args, key=f"chaosgd-{key}-{time.time_ns()}",
                                                retries=self.retries, pure=False)
                    in_flight[future] = key
                if not in_flight:
                    return
                try:
                    dask_wait(list(in_flight), timeout=_POLL, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    continue
                for future in [f for f in in_flight if f.done()]:
                    key = in_flight.pop(future)
                    try:
                        result = future.result()
                    except Exception as error:
                        raise TaskFailed(key, error) from None
                    on_result(key, result)
        except BaseException:
            self.client.cancel(list(in_flight))
            raise

    def close(self):
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


EXECUTORS = {"serial": SerialExecutor, "processes": ProcessExecutor, "dask": DaskExecutor}


def open_executor(name: str, *, workers: int | None = None, scheduler: str | None = None,
                  retries: int = 2) -> Executor:
    """The executor called ``name`` (one of ``EXECUTORS``)."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}")
    if scheduler is not None and name != "dask":
        raise ValueError(f"a scheduler address is for the dask executor, not {name!r}")
    if name == "serial":
        return SerialExecutor()
    if name == "processes":
        return ProcessExecutor(workers, retries)
    return DaskExecutor(workers, scheduler, retries)


def _drain(reports, on_progress) -> None:
    if reports is None:
        return
    while True:
        try:
            key, n = reports.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return
        if on_progress is not None:
            on_progress(key, n)


def _call(fn, key, args):
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


def _worker_init(parent: int, reports) -> None:
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
def worker_environment(workers: int):
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
