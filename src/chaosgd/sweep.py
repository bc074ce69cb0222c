"""Learning-rate sweeps: a configuration expands into tasks (one learning rate x a block of initial conditions),
each a pure function of the configuration whose records are written atomically to their own file.

A run folder holds ``config.toml``, ``run.json`` (configuration hash, versions, machine) and ``tasks/*.npz``.
Running a sweep again skips the finished tasks, so an interrupted sweep (``kill -9`` included) resumes without
losing or redoing work, and the results equal those of an uninterrupted run: every task draws its initial
conditions from the seed and its own indices only. A folder made with another configuration is refused.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from chaosgd.config import Config, ConfigError
from chaosgd.records import Records, concatenate

EXECUTORS = ("serial", "processes", "dask")


@dataclass(frozen=True)
class Task:
    """Initial conditions ``first .. first + count - 1`` at learning rate ``eta`` (``eta_index`` in the grid)."""

    eta_index: int
    eta: float
    first: int
    count: int

    @property
    def name(self) -> str:
        return f"eta{self.eta_index:03d}_ic{self.first:05d}"


def tasks(config: Config) -> list[Task]:
    """All tasks of a sweep, learning-rate major."""
    s, block = config.ensemble.initial, config.block
    return [Task(k, eta, first, min(block, s - first))
            for k, eta in enumerate(config.training.etas) for first in range(0, s, block)]


@lru_cache(maxsize=2)
def _dataset(data_config):
    from chaosgd.datasets import load
    dataset = load(data_config.name, path=data_config.path, standardize=data_config.standardize,
                   seed=data_config.seed)
    if data_config.n_train is not None:
        from chaosgd.datasets import Dataset
        n = data_config.n_train
        dataset = Dataset(dataset.name, dataset.x_train[:n], dataset.y_train[:n], dataset.x_test, dataset.y_test,
                          dataset.n_classes)
    return dataset


def build_model(config: Config, dataset):
    from chaosgd.models import for_dataset
    m = config.model
    return for_dataset(m.architecture, dataset.example_shape, dataset.n_classes, hidden=m.hidden,
                       activation=m.activation, sigma=m.sigma, dtype=m.dtype)


def run_task(config: Config, task: Task) -> Records:
    """The records of one task: a pure function of (configuration, learning rate, initial conditions)."""
    from chaosgd.engine import run
    from chaosgd.ensemble import epsilon_ball, initial_conditions
    from chaosgd.objective import classification

    dataset = _dataset(config.data)
    model = build_model(config, dataset)
    e = config.ensemble
    centres = initial_conditions(model, task.count, seed=e.seed, first=task.first)
    ball = epsilon_ball(centres, e.copies, epsilon=e.epsilon, perturb=e.perturb, seed=e.seed, first=task.first)
    return run(classification(model, l2=config.training.l2), ball, task.eta, dataset.arrays(config.model.dtype),
               epochs=config.training.epochs, initial_condition=task.first + np.arange(task.count),
               stop_copies_after=config.analysis.plateau if config.training.stop_copies else None,
               stop_references_at=config.training.target if config.training.stop_references else None)


def task_sharpness(config: Config, task: Task):
    """Sharpness along the reference trajectory of initial condition 0, for the task that holds it, when
    ``training.sharpness_every`` > 0 (one track per learning rate: figure 14); else None."""
    from chaosgd.ensemble import initial_conditions
    from chaosgd.objective import classification
    from chaosgd.sharpness import track_sharpness

    t = config.training
    if t.sharpness_every == 0 or task.first != 0:
        return None
    dataset = _dataset(config.data)
    model = build_model(config, dataset)
    params = _first(initial_conditions(model, 1, seed=config.ensemble.seed))
    return track_sharpness(classification(model, l2=t.l2), params, task.eta, dataset.arrays(config.model.dtype),
                           epochs=t.epochs, every=t.sharpness_every, hessian_examples=t.sharpness_examples,
                           seed=config.ensemble.seed)


def _first(stacked):
    """The first network of a stacked pytree."""
    import jax
    return jax.tree_util.tree_map(lambda x: x[0], stacked)


def load_sharpness(run_dir: str | Path) -> list:
    """The sharpness tracks stored in a run folder (``training.sharpness_every`` > 0), by learning rate."""
    from chaosgd.sharpness import SharpnessTrack

    tracks = []
    for path in sorted((Path(run_dir) / "tasks").glob("*.sharpness.npz")):
        with np.load(path) as f:
            tracks.append(SharpnessTrack(float(f["eta"]), f["epoch"], f["value"], f["residual"], f["loss"]))
    return sorted(tracks, key=lambda tr: tr.eta)


def run_and_store(config_toml: str, task: Task, run_dir: str) -> str:
    """Run one task and write its records atomically to ``run_dir/tasks/<name>.npz`` (what workers execute)."""
    config = Config.from_toml(config_toml)
    path = Path(run_dir) / "tasks" / f"{task.name}.npz"
    start = time.perf_counter()
    records = run_task(config, task)
    track = task_sharpness(config, task)
    seconds = time.perf_counter() - start
    if track is not None:  # written before the records, whose file marks the task finished
        partial = path.with_name(f"{task.name}.sharpness.partial.npz")
        np.savez(partial, eta=track.eta, epoch=track.epoch, value=track.value, residual=track.residual,
                 loss=track.loss)
        partial.replace(path.with_name(f"{task.name}.sharpness.npz"))
    # The timing goes first: the .npz, written last and atomically, is what marks the task finished.
    timing = path.with_suffix(".json.partial")
    timing.write_text(json.dumps({"seconds": seconds, "network_epochs": records.network_epochs,
                                  "naive_network_epochs": records.naive_network_epochs, "host": platform.node()}))
    timing.replace(path.with_suffix(".json"))
    records.save(path)
    return task.name


def prepare_run_dir(config: Config, run_dir: str | Path) -> Path:
    """Create the run folder, or check that an existing one belongs to the same configuration."""
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if info["config_hash"] != config.hash():
            raise ConfigError(f"{run_dir} holds a run of another configuration (hash {info['config_hash']}, this "
                              f"one is {config.hash()}); resume it with its own config.toml or choose a new folder")
        return run_dir
    (run_dir / "tasks").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(config.to_toml())
    import jax
    info = {"config_hash": config.hash(), "name": config.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"chaosgd": __import__("chaosgd").__version__, "jax": jax.__version__,
                         "numpy": np.__version__, "python": sys.version.split()[0]},
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "jax_backend": jax.default_backend()}}
    tmp = info_path.with_name("run.json.partial")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(info_path)
    return run_dir


def pending(config: Config, run_dir: Path) -> list[Task]:
    return [t for t in tasks(config) if not (run_dir / "tasks" / f"{t.name}.npz").exists()]


def sweep(config: Config, run_dir: str | Path, *, executor: str = "processes", workers: int | None = None,
          scheduler: str | None = None, retries: int = 2, progress: bool = True, log=print) -> Path:
    """Run every unfinished task of ``config`` into ``run_dir`` and return the folder.

    Executors: ``"serial"`` (in this process), ``"processes"`` (local worker processes, default; one per core, each
    single-threaded so that they do not oversubscribe the cores), ``"dask"`` (``scheduler`` is the address of a
    running Dask scheduler; None starts a LocalCluster). A task whose worker dies is run again, up to ``retries``
    times. After each learning rate completes, a one-line summary is printed.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {list(EXECUTORS)}")
    run_dir = prepare_run_dir(config, run_dir)
    todo = pending(config, run_dir)
    total = len(tasks(config))
    log(f"{config.name}: {total - len(todo)} of {total} tasks already done in {run_dir}; running {len(todo)} "
        f"with the {executor} executor")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), unit="task", desc=config.name)

    summarized = set()

    def finished(task: Task):
        if bar is not None:
            bar.update(1)
        # Workers may have written later tasks already, so a learning rate can look complete more than once.
        if task.eta_index not in summarized and not any(t.eta_index == task.eta_index
                                                         for t in pending(config, run_dir)):
            summarized.add(task.eta_index)
            line = summary_line(config, run_dir, task.eta_index)
            if bar is not None and log is print:
                bar.write(line)  # keeps the progress bar intact
            else:
                log(line)

    toml = config.to_toml()
    if executor == "serial":
        for task in todo:
            run_and_store(toml, task, str(run_dir))
            finished(task)
    elif executor == "processes":
        _run_processes(toml, todo, run_dir, workers or os.cpu_count() or 1, retries, finished)
    else:
        _run_dask(toml, todo, run_dir, scheduler, workers, retries, finished)
    if bar is not None:
        bar.close()
    return run_dir


@contextmanager
def single_threaded_workers():
    """While open, processes started from here run single-threaded XLA and BLAS: n processes on n cores, not n x n
    threads."""
    env = {"XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                         "intra_op_parallelism_threads=1").strip(),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
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


def _run_processes(toml, todo, run_dir, workers, retries, finished):
    import multiprocessing

    attempts = {t.name: 0 for t in todo}
    with single_threaded_workers():
        remaining = list(todo)
        while remaining:
            with ProcessPoolExecutor(max_workers=min(workers, len(remaining)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(run_and_store, toml, t, str(run_dir)): t for t in remaining}
                try:
                    for future in as_completed(futures):
                        future.result()
                        finished(futures[future])
                except BrokenProcessPool:
                    pass  # a worker died (killed, out of memory): rerun what is not on disk
            remaining = [t for t in remaining if not (run_dir / "tasks" / f"{t.name}.npz").exists()]
            for t in remaining:
                attempts[t.name] += 1
                if attempts[t.name] > retries:
                    raise RuntimeError(f"task {t.name} failed {attempts[t.name]} times; its worker keeps dying")


def _run_dask(toml, todo, run_dir, scheduler, workers, retries, finished):
    try:
        from dask.distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError:
        raise ValueError("the dask executor needs dask.distributed: pip install 'chaosgd[dask]'") from None
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True)
    client = Client(scheduler or cluster)
    try:
        futures = {client.submit(run_and_store, toml, t, str(run_dir), key=f"chaosgd-{t.name}", retries=retries,
                                 pure=False): t for t in todo}
        for future in dask_completed(list(futures)):
            future.result()
            finished(futures[future])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def load_records(run_dir: str | Path, eta_index: int | None = None) -> Records:
    """All stored records of a run (or of one learning rate), in task order."""
    run_dir = Path(run_dir)
    config = Config.load(run_dir / "config.toml")
    parts = [Records.load(run_dir / "tasks" / f"{t.name}.npz") for t in tasks(config)
             if (eta_index is None or t.eta_index == eta_index) and (run_dir / "tasks" / f"{t.name}.npz").exists()]
    if not parts:
        raise FileNotFoundError(f"{run_dir} has no finished tasks" + ("" if eta_index is None else
                                                                      f" for learning rate #{eta_index}"))
    return concatenate(parts)


def summary_line(config: Config, run_dir: Path, eta_index: int) -> str:
    from chaosgd.lyapunov import network_exponent
    from chaosgd.training_time import time_to_accuracy

    records = load_records(run_dir, eta_index)
    net = network_exponent(records.distance, r2_min=config.analysis.r2_min, lambda_min=config.analysis.lambda_min,
                           plateau=config.analysis.plateau, stopped_at=records.copies_stopped_at)
    tt = time_to_accuracy(records.test_accuracy, config.training.target)
    diverged = int((records.diverged_at[:, 0] >= 0).sum())
    return (f"eta = {config.training.etas[eta_index]:g}: lambda_NMLE = {net.mean:.3f} ± {net.std:.3f}, "
            f"p = {net.p:.0f}%, {tt.describe()}" + (f", {diverged} diverged" if diverged else ""))
