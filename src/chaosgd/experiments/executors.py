"""Where tasks run: in this process (``serial``), in local worker processes (``processes``), or on a Dask cluster
(``dask``). One ``map`` for all three, used by sweeps and the sweet-spot search alike.

``map`` keeps at most ``capacity`` tasks in flight and asks its source for the next one only when a slot is free, so
that tasks are claimed just before they run (several jobs can share a run folder) and an error or Ctrl-C leaves
nothing queued. It waits in short slices, so Ctrl-C and SIGTERM are seen within a second: in-flight work is then
abandoned (worker processes are killed, Dask futures cancelled, a serial task stopped at its next epoch) and the
interruption propagates. A task that raises
stops the map at once with ``TaskFailed`` naming the task. Worker processes ignore Ctrl-C (their parent handles it),
run single-threaded (n processes on n cores), share the machine's memory budget, and die with their parent, even
after ``kill -9`` (``workers``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import queue
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable

from chaosgd.errors import ChaosgdError
from chaosgd.experiments.claims import CLAIM_TIMEOUT, check_timing
from chaosgd.experiments.workers import call as worker_call
from chaosgd.experiments.workers import environment as worker_environment
from chaosgd.experiments.workers import init as worker_init

RETRIES = 2  # times a task whose worker died is run again
WORKERS_MAX = 1024  # worker processes of one executor (each is a process with its own copy of JAX)
_POLL = 0.25  # seconds between looks at the in-flight tasks, and at signals
NO_WORKERS_SAY = 10.0  # seconds a Dask scheduler may have no workers before the sweep says that it waits for some
_STOP = threading.Event()  # set by the command line's signal handler: a Ctrl-C that Python lost is still seen


_SOFT = []  # non-empty while a map runs code that a KeyboardInterrupt raised mid-call would leave broken (Dask)


def request_stop() -> bool:
    """Ask every running ``map`` to stop (from a signal handler): it raises KeyboardInterrupt at its next look.
    Returns whether the handler should raise KeyboardInterrupt itself now (not inside Dask's client calls, whose
    event loop a KeyboardInterrupt leaves logging errors; the map then stops at its next look, within _POLL).

    Python can lose the KeyboardInterrupt that a handler raises (one raised inside a garbage-collection callback is
    printed and dropped), so the handler sets this as well."""
    _STOP.set()
    return not _SOFT


def clear_stop() -> None:
    _STOP.clear()


_POOLS = threading.Event()  # set once this process has started worker processes (processes or Dask executor)


def worker_pools_started() -> bool:
    """Whether this process started worker processes: its training ran there, not in this process."""
    return _POOLS.is_set()


def check_stop() -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt


class TaskFailed(ChaosgdError, RuntimeError):
    """A task raised: the message names the task and the error."""

    def __init__(self, key, error: BaseException | str):
        detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        notes = [] if isinstance(error, str) else getattr(error, "__notes__", [])
        super().__init__(f"task {key} failed: {detail}" + "".join(f" ({note})" for note in notes))
        self.key = key


class Executor:
    """Runs ``fn(*args, progress=report)`` for the items a source hands out; see the module docstring.

    One loop (``map``) for every backend, which supplies how a task is submitted (``_submit``), waited on
    (``_wait``), its result read (``_result``, raising ``_Lost`` when its worker died with it), lost tasks run again
    (``_recover``), where the tasks' progress arrives (``reports``) and how in-flight work is abandoned on an error
    or Ctrl-C (``_abandon``).
    """

    capacity = 1
    reports = None  # a queue of (key, n) progress increments from the tasks, where the backend relays them

    def map(self, fn: Callable, source: Callable, on_result: Callable, on_progress: Callable | None = None) -> None:
        """Run tasks until ``source()`` returns None and none is in flight.

        ``source()`` returns ``(key, args)``; ``on_result(key, result)`` is called in this thread as each task ends;
        ``on_progress(key, n)`` receives the increments that a task reports through its ``progress`` argument (None
        where the executor cannot relay them)."""
        self._open()
        in_flight: dict = {}  # handle -> (key, args)
        retry: list = []  # tasks lost with their worker, run again before any new one
        try:
            while True:
                while len(in_flight) < self.capacity and (item := retry.pop(0) if retry else source()) is not None:
                    handle = self._submit(fn, item)
                    if handle is None:  # the backend cannot take it now (its workers died): run it again
                        retry.insert(0, item)
                        break
                    in_flight[handle] = item
                if not in_flight and not retry:
                    return
                done = self._wait(list(in_flight)) if in_flight else []
                _drain(self.reports, on_progress)
                check_stop()
                lost = bool(retry)
                for handle in done:
                    try:
                        result = self._result(handle)
                    except _Lost:
                        lost = True  # the task stays in flight, to be run again below
                        continue
                    except Exception as error:
                        raise TaskFailed(in_flight[handle][0], error) from None
                    key, _ = in_flight.pop(handle)
                    on_result(key, result)
                if lost:
                    retry = self._recover(list(in_flight.values()) + retry)
                    in_flight = {}
        except BaseException:
            self._abandon(list(in_flight))
            raise
        finally:
            _drain(self.reports, on_progress)
            self._done()

    def _open(self) -> None:
        """Before a map: start what runs the tasks."""

    def _submit(self, fn, item):
        """Start ``fn(*args)`` for ``item = (key, args)``; a handle, or None if it cannot be started now."""
        raise NotImplementedError

    def _wait(self, handles: list) -> list:
        """The handles that finished, after waiting at most _POLL seconds for one."""
        return wait(handles, timeout=_POLL, return_when=FIRST_COMPLETED)[0]

    def _result(self, handle):
        return handle.result()

    def _recover(self, lost: list) -> list:
        """Tasks lost with their worker: the items to run again (or raise ``TaskFailed``)."""
        raise TaskFailed(", ".join(key for key, _ in lost), "its worker was lost")

    def _abandon(self, handles: list) -> None:
        """Stop the tasks in flight now (an error or Ctrl-C)."""

    def _done(self) -> None:
        """After a map, however it ended."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Lost(Exception):
    """A task's worker died with it (``Executor._result``)."""


class SerialExecutor(Executor):
    """One task at a time in this process. It runs in a thread so that this thread sees Ctrl-C at once; the task's
    per-epoch progress report then raises inside it, so the task stops within an epoch instead of running on."""

    def __init__(self):
        self.reports = queue.SimpleQueue()
        self._running = None  # (stop event, thread) of the task in flight

    def _submit(self, fn, item):
        key, args = item
        future, stop = Future(), threading.Event()

        def progress(n):
            if stop.is_set():
                raise _Abandoned
            self.reports.put((key, n))

        def work():
            try:
                future.set_result(fn(*args, progress=progress))
            except BaseException as error:  # handed to the waiting thread
                future.set_exception(error)
            finally:
                if stop.is_set():
                    _JAX_LOG.removeFilter(_quiet_abandoned)

        thread = threading.Thread(target=work, name=f"chaosgd-task-{key}", daemon=True)
        self._running = (stop, thread)
        thread.start()
        return future

    def _abandon(self, handles):
        # The task stops at its next progress report (within an epoch; compiling or loading data first can take
        # longer, and then this returns before it has stopped).
        if handles and self._running is not None:
            stop, thread = self._running
            _JAX_LOG.addFilter(_quiet_abandoned)
            stop.set()
            thread.join(timeout=5)


class _Abandoned(Exception):
    """Raised in a task's progress report to stop it: its executor was interrupted."""


def _quiet_abandoned(record) -> bool:
    """JAX logs every exception raised in a callback with its traceback; an abandoned task's is expected."""
    return not (record.exc_info and isinstance(record.exc_info[1], _Abandoned))


_JAX_LOG = logging.getLogger("jax._src.debugging")


class ProcessExecutor(Executor):
    """Local worker processes, started once and kept (they keep their data and compiled code between tasks).

    A task whose worker dies (killed, out of memory) is run again, up to ``retries`` times."""

    def __init__(self, workers: int | None = None, retries: int = RETRIES):
        self.capacity = _processes(workers)
        self.retries = retries
        self._pool = None
        self._attempts: dict = {}

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _POOLS.set()
        context = multiprocessing.get_context("spawn")
        self.reports = context.Queue()  # new each time: a killed worker may have left the old one's lock held
        for attempt in range(self.retries + 1):
            with worker_environment(self.capacity):
                self._pool = ProcessPoolExecutor(max_workers=self.capacity, mp_context=context,
                                                 initializer=worker_init, initargs=(os.getpid(), self.reports))
                # Start every worker now, from this thread: they are told to die with it (PR_SET_PDEATHSIG).
                # They are started with Ctrl-C ignored, which they inherit: a terminal's Ctrl-C reaches the whole
                # process group, and only this process should act on it (workers still importing would print
                # tracebacks).
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
                try:
                    started = [self._pool.submit(os.getpid) for _ in range(self.capacity)]
                finally:
                    signal.signal(signal.SIGINT, previous)
                try:
                    for f in started:
                        f.result()
                    return
                except BrokenProcessPool:  # a worker was killed while starting
                    self._kill()
        raise RuntimeError(f"worker processes died while starting, {self.retries + 1} times: killed, or out of "
                           "memory? From a Python script, call sweep() under `if __name__ == \"__main__\":` (each "
                           "worker imports the main script again), or use executor=\"serial\"")

    def _open(self):
        if self._pool is None:
            self._start()
        self._attempts = {}

    def _submit(self, fn, item):
        try:
            return self._pool.submit(worker_call, fn, *item)
        except BrokenProcessPool:  # a worker died before this task was handed out
            return None

    def _result(self, handle):
        try:
            return handle.result()
        except BrokenProcessPool:
            raise _Lost from None

    def _recover(self, lost):
        # A worker died, and the pool with it: every task in flight is lost and run again. The pool cannot say
        # whose worker it was: all that ran are charged.
        for key, _ in lost:
            self._attempts[key] = self._attempts.get(key, 0) + 1
        if any(self._attempts[key] > self.retries for key, _ in lost):
            names = ", ".join(key for key, _ in lost)
            raise TaskFailed(names, f"a worker process died {max(self._attempts.values())} times while these tasks "
                                    "were running (killed, or out of memory?)")
        self._kill()
        self._start()
        return lost

    def _abandon(self, handles):
        self._kill()

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
    Tasks whose worker dies are rescheduled by Dask; progress within a task is not relayed. On Ctrl-C the futures
    are cancelled, but a task already running on a remote worker may finish and write its file (harmless: it is the
    same deterministic result). After a stop, Dask's own logging in this process is left at CRITICAL."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, retries: int = RETRIES):
        try:
            import dask
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise ValueError("the dask executor needs dask.distributed: pip install 'chaosgd[dask]'") from None
        self.retries = retries
        self._cluster = None
        self._stopped = False
        _POOLS.set()
        if scheduler is None:
            n = _processes(workers)
            # As for the processes executor, the cluster's processes start with Ctrl-C ignored (their own workers
            # inherit it): a terminal's Ctrl-C reaches the whole process group, and only this process should act
            # on it (a worker interrupted mid-task prints its traceback).
            main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
            try:
                # A task whose worker died is run again by the scheduler up to its allowed-failures times: the
                # local scheduler takes ``retries`` for it (a running scheduler keeps its own setting).
                with worker_environment(n), dask.config.set({"distributed.scheduler.allowed-failures": retries}):
                    # Dask's workers log each cancelled task as a warning: noise when a sweep is stopped. The
                    # dashboard takes a free port: on Dask's fixed one, a second sweep at once prints a warning.
                    self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                 silence_logs=logging.ERROR, dashboard_address=":0")
            finally:
                if main:
                    signal.signal(signal.SIGINT, previous)
        try:
            self.client = Client(scheduler or self._cluster)
        except (OSError, ValueError) as error:  # (a scheduler that does not answer: OSError, after Dask's timeout)
            if scheduler is None:
                raise
            raise ValueError(f"scheduler {scheduler!r}: no Dask scheduler answers there ({error}); start one "
                             "(dask scheduler), or leave the scheduler out for a local cluster") from None

    @property
    def capacity(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def _open(self):
        _SOFT.append(self)
        self._no_workers_since, self._said = None, False

    def _done(self):
        _SOFT.remove(self)

    def _submit(self, fn, item):
        key, args = item
        # No retries of a task that raised (the sweep stops at once); a task whose worker died is rescheduled by
        # Dask itself (allowed-failures: ``retries`` on a local cluster).
        return self.client.submit(worker_call, fn, key, args, key=f"chaosgd-{key}-{time.time_ns()}", retries=0,
                                  pure=False)

    def _wait(self, handles):
        from dask.distributed import wait as dask_wait
        try:
            dask_wait(handles, timeout=_POLL, return_when="FIRST_COMPLETED")
        except TimeoutError:
            self._say_if_no_workers()
            return []
        return [f for f in handles if f.done()]

    def _say_if_no_workers(self):
        """A scheduler without workers would wait in silence: say so once, after NO_WORKERS_SAY seconds."""
        if self.client.nthreads():
            self._no_workers_since = None
            return
        self._no_workers_since = self._no_workers_since or time.monotonic()
        if not self._said and time.monotonic() - self._no_workers_since > NO_WORKERS_SAY:
            self._said = True
            address = self.client.scheduler.address
            print(f"chaosgd: the Dask scheduler at {address} has no workers; the tasks wait until some join (start "
                  f"them with `dask worker {address}`; Ctrl-C stops)", file=sys.stderr, flush=True)

    def _abandon(self, handles):
        self.client.cancel(handles)
        self._stopped = True

    def close(self):
        if self._stopped and self._cluster is not None:
            # A stopped sweep's local workers are killed first, as the processes executor's are: a graceful close
            # waits on a worker busy in its task, and meanwhile the scheduler may close under it, which makes the
            # worker print a heartbeat traceback. Their results are not wanted (files are written atomically).
            # Their nannies are told first not to start new workers in their place, and Dask's own logging in this
            # process stays quiet from here on: the comms closed under it are logged with tracebacks, some after
            # the cluster has put its log levels back. The process is stopping: nothing of ours is logged there.
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            nannies = list(self._cluster.workers.values())

            async def no_restarts():
                for nanny in nannies:
                    nanny.close_gracefully()

            with contextlib.suppress(Exception):
                self._cluster.sync(no_restarts)
            for nanny in nannies:
                with contextlib.suppress(Exception):
                    os.kill(nanny.pid, signal.SIGKILL)
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


EXECUTORS = {"serial": SerialExecutor, "processes": ProcessExecutor, "dask": DaskExecutor}


def open_executor(name: str, *, workers: int | None = None, scheduler: str | None = None,
                  retries: int = RETRIES) -> Executor:
    """The executor called ``name`` (one of ``EXECUTORS``)."""
    check_executor(name, workers, scheduler)
    if name == "serial":
        return SerialExecutor()
    if name == "processes":
        return ProcessExecutor(workers, retries)
    return DaskExecutor(workers, scheduler, retries)


DEVICES = ("cpu", "gpu")


@dataclass(frozen=True)
class Execution:
    """How a plan's tasks run, checked once when it is built (what cannot work is refused before any data loads).

    ``executor``: one of ``EXECUTORS``; None: ``"serial"`` on a GPU (``device="gpu"``: one process holds it), else
    ``"processes"``. ``workers``: its processes (None: one per core). ``scheduler``: a Dask scheduler's address
    (None: a LocalCluster). ``retries``: times a task whose worker died is run again. ``claim_timeout``: seconds
    after which a claim that was not refreshed is taken over (its job died); ``wait_poll``: seconds between looks
    at tasks that other jobs are computing. ``device``: where JAX computes, ``"cpu"`` or ``"gpu"`` (None: JAX's
    choice); ``plan.make_plan`` pins the process to it (``pin_device``) before it loads any data. (The executor
    chosen for None is kept: ``dataclasses.replace`` with another device does not choose again.)"""

    executor: str | None = None
    workers: int | None = None
    scheduler: str | None = None
    retries: int = RETRIES
    claim_timeout: float = CLAIM_TIMEOUT
    wait_poll: float = 2.0
    device: str | None = None

    def __post_init__(self):
        if self.device is not None and self.device not in DEVICES:
            raise ValueError(f"device must be one of {list(DEVICES)} or None (JAX's choice); got {self.device!r}")
        chosen = self.executor is None
        if chosen:
            object.__setattr__(self, "executor", "serial" if self.device == "gpu" else "processes")
        check_executor(self.executor, self.workers, self.scheduler)
        if self.executor == "serial" and self.workers is not None and self.workers > 1:  # (it would be ignored)
            raise ValueError(f"workers = {self.workers}: the serial executor runs one task at a time in this process"
                             + (" (the default on a GPU)" if chosen else "")
                             + "; workers are for the processes and dask executors")
        if isinstance(self.retries, bool) or not isinstance(self.retries, numbers.Integral) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0; got {self.retries!r}")
        check_timing(self.claim_timeout)
        if (isinstance(self.wait_poll, bool) or not isinstance(self.wait_poll, numbers.Real)
                or not 0 < self.wait_poll < math.inf):
            raise ValueError(f"wait_poll must be a number of seconds > 0 and finite; got {self.wait_poll!r}")

    @property
    def local_workers(self) -> int | None:
        """Processes of this machine that share its memory budget while the tasks run; None when they run on a
        Dask scheduler's machines."""
        if self.executor == "serial":
            return 1
        if self.executor == "dask" and self.scheduler is not None:
            return None
        return _processes(self.workers)

    def open(self) -> Executor:
        return open_executor(self.executor, workers=self.workers, scheduler=self.scheduler, retries=self.retries)

    def pin_device(self) -> None:
        """Pin JAX (and the worker processes, through the environment) to ``device``, or say why it cannot be used;
        nothing for None."""
        if self.device is None:
            return
        import jax
        before = os.environ.get("JAX_PLATFORMS"), jax.config.jax_platforms
        os.environ["JAX_PLATFORMS"] = {"cpu": "cpu", "gpu": "cuda,cpu"}[self.device]  # (host callbacks need the CPU)
        jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])
        try:
            # With "cuda,cpu" a machine without a usable GPU falls back to the CPU silently: that is refused too.
            found = jax.devices()[0].platform
        except Exception:  # jax raises RuntimeError or, for a platform it lacks entirely, AssertionError
            found = None
        if found != self.device:  # (left as it was, for this process and the workers it starts)
            if before[0] is None:
                os.environ.pop("JAX_PLATFORMS", None)
            else:
                os.environ["JAX_PLATFORMS"] = before[0]
            jax.config.update("jax_platforms", before[1])
            raise RuntimeError(f"device {self.device}: JAX cannot use it here (it computes on {found or 'nothing'}"
                               "; a process computes on the device its first computation chose); for a GPU install a "
                               "CUDA build of JAX (pip install 'jax[cuda12]') on a machine with an NVIDIA GPU, or use "
                               "the CPU")


def _processes(workers: int | None) -> int:
    """The processes of a processes executor or a LocalCluster: ``workers``, else one per core."""
    return max(1, int(workers or os.cpu_count() or 1))


def check_executor(name: str, workers: int | None = None, scheduler: str | None = None) -> None:
    """Refuse an unknown executor, a worker count below 1, or a scheduler address for an executor other than Dask."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {list(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, numbers.Integral)
                                or not 1 <= workers <= WORKERS_MAX):
        raise ValueError(f"workers must be an integer in [1, {WORKERS_MAX}]; got {workers!r}")
    if scheduler is not None and name == "dask":
        _check_address(scheduler)
    if scheduler is not None and name != "dask":
        raise ValueError(f"scheduler {scheduler!r}: a scheduler address is for the dask executor, and the executor "
                         f"is {name!r}; choose the dask executor, or leave the scheduler out")


def _check_address(scheduler) -> None:
    """Refuse a scheduler address that Dask cannot parse, before anything runs (without dask.distributed the
    executor itself says what to install)."""
    try:
        from distributed.comm.addressing import parse_address, parse_host_port
    except ImportError:
        return
    try:
        protocol, location = parse_address(str(scheduler))
        if protocol in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as error:
        raise ValueError(f"scheduler {scheduler!r}: not a Dask scheduler's address ({error}); give it as "
                         "tcp://HOST:PORT") from None


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
