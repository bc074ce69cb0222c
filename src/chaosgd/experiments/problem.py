"""From a configuration to numbers: the problem it defines (data, model, objective), its tasks, and the one path
that trains a block of initial conditions with their epsilon-balls.

A task is one learning rate times a block of initial conditions. ``run_task`` is a pure function of the
configuration and the task: every task draws its initial conditions from the seed and its own indices only, so
tasks can run in any order, in any process, on any machine, and any single one can be re-run alone.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from chaosgd.experiments.config import Config, ConfigError, Data, Ensemble, Model
from chaosgd.precision import float64


@dataclass(frozen=True)
class Task:
    """Initial conditions ``first .. first + count - 1`` at learning rate ``eta``.

    ``eta_index`` is the learning rate's place in a sweep's grid; None for a learning rate chosen on the fly (the
    sweet-spot search), whose files are then named by the learning rate itself. ``point``: in a 2-D sweep, the
    index of the second axis's value (``training.axis_values``); None in a 1-D sweep.
    """

    eta_index: int | None
    eta: float
    first: int
    count: int
    point: int | None = None

    @property
    def name(self) -> str:
        where = f"eta{self.eta_index:03d}" if self.eta_index is not None else f"eta{self.eta!r}"
        axis = "" if self.point is None else f"x{self.point:03d}_"
        return f"{axis}{where}_ic{self.first:05d}" + ("" if self.eta_index is not None else f"_n{self.count}")

    def identity(self) -> dict:
        point = {} if self.point is None else {"point": self.point}  # 1-D task files keep their identity
        return {"eta_index": self.eta_index, "eta": self.eta, "first": self.first, "count": self.count, **point}


def tasks(config: Config) -> list[Task]:
    """All tasks of a sweep: value of the second axis major (in a 2-D sweep), then learning rate."""
    s, block = config.ensemble.initial, config.block
    points = [None] if config.training.axis is None else range(len(config.training.axis_values))
    return [Task(k, eta, first, min(block, s - first), j) for j in points
            for k, eta in enumerate(config.training.etas) for first in range(0, s, block)]


def task_config(config: Config, task: Task) -> Config:
    """The 1-D configuration a task belongs to: ``config`` itself, or its point on the second axis."""
    return config if task.point is None else config.at(config.training.axis_values[task.point])


@dataclass(frozen=True)
class Problem:
    """What a configuration trains: its data set, model, objective and the data pytree the objective reads."""

    dataset: object
    model: object
    objective: object
    arrays: dict

    def describe(self) -> str:
        from chaosgd.models import count_parameters
        d = self.dataset
        return (f"{d.name}: {len(d.y_train)} train / {len(d.y_test)} test; {self.model} with "
                f"{count_parameters(self.model):,} parameters")


@float64
def pinned(config: Config) -> Config:
    """``config`` with what it names by location pinned by content: an npz file's SHA-256 (``data.sha256``) and the
    file of a user model's module (``model.source_sha256``), so that the run's hash names them and a changed file
    is refused on resume and on every worker. ``config`` itself when there is nothing to pin."""
    pins = {}
    if config.data.name == "npz" and config.data.sha256 is None:
        from chaosgd.datasets import DataNotFoundError, file_sha256
        try:
            pins["data.sha256"] = file_sha256(config.data.path)
        except OSError as error:
            relative = ("" if os.path.isabs(config.data.path) else
                        f"; a relative path is read from the current folder, {os.getcwd()}")
            raise DataNotFoundError(f"data.path: {config.data.path}: cannot be read as the .npz file "
                                    f"({error.strerror}{relative})") from None
    if config.model.source is not None and config.model.source_sha256 is None:
        from chaosgd.models.source import digest
        pins["model.source_sha256"] = digest(config.model.source)
    return config.with_values(**pins) if pins else config


@lru_cache(maxsize=2)
def dataset(data: Data):
    """The data set a ``Data`` section names (kept for the process: workers load it once for all their tasks)."""
    from chaosgd.datasets import Dataset, load
    loaded = load(data.name, path=data.path, standardize=data.standardize, seed=data.seed, sha256=data.sha256)
    if data.n_train is not None:
        n = data.n_train
        if n > len(loaded.y_train):  # (the run would record n and train on fewer)
            raise ConfigError(f"data.n_train: {n}, but {data.name} has {len(loaded.y_train)} training examples; "
                              f"use at most {len(loaded.y_train)}, or leave it unset for all of them")
        loaded = Dataset(loaded.name, loaded.x_train[:n], loaded.y_train[:n], loaded.x_test, loaded.y_test,
                         loaded.n_classes)
    if data.n_test is not None:
        n = data.n_test
        if n > len(loaded.y_test):
            raise ConfigError(f"data.n_test: {n}, but {data.name} has {len(loaded.y_test)} test examples; "
                              f"use at most {len(loaded.y_test)}, or leave it unset for all of them")
        loaded = Dataset(loaded.name, loaded.x_train, loaded.y_train, loaded.x_test[:n], loaded.y_test[:n],
                         loaded.n_classes)
    return loaded


def n_classes(data: Data) -> int:
    """Classes of a data set, known without loading it for the built-in ones."""
    from chaosgd.datasets import CLASSES
    return CLASSES[data.name] if data.name in CLASSES else dataset(data).n_classes


_USER_MODELS: dict = {}


def build_model(model: Model, data_set):
    """The model a ``Model`` section names, sized for ``data_set``: the built-in family, or the user's factory
    (``model.source``), whose module must still be the file the run pinned and whose parameters must have
    ``model.dtype``."""
    if model.source is not None:
        from chaosgd.models.base import check_model
        from chaosgd.models.source import digest, model_from_source
        now = digest(model.source)
        if model.source_sha256 is not None and now != model.source_sha256:
            raise ConfigError(f"model.source: the module of {model.source} has changed since the run started (its "
                              f"file's SHA-256 is now {now}, the run pinned {model.source_sha256}); restore it, or "
                              "start a new run folder")
        key = (model, now, id(data_set))  # the same model object for every task of a process: compiled once
        if key in _USER_MODELS:
            return _USER_MODELS[key][1]
        built = model_from_source(model.source, data_set.x_train[:8], data_set.n_classes, dtype=model.dtype)
        try:
            check_model(built, data_set.example_shape, data_set.n_classes, model.dtype)
        except ValueError as error:
            raise ConfigError(f"model.source: {model.source}: {error}") from None
        _USER_MODELS.clear()  # one at a time; the data set is held, so its id is not reused meanwhile
        _USER_MODELS[key] = (data_set, built)
        return built
    from chaosgd.models import for_dataset
    return for_dataset(model.architecture, data_set.example_shape, data_set.n_classes, hidden=model.hidden,
                       activation=model.activation, sigma=model.sigma, dtype=model.dtype, dropout=model.dropout)


def check_point(config: Config, *, strict: bool = True, workers: int | None = 1, count: int | None = None) -> int:
    """Refuse a 1-D configuration that cannot run, before anything runs: data that cannot be loaded, a model that
    cannot take it, records that do not divide an epoch (``records_per_epoch``, with ``strict``) and, where
    ``workers`` processes share this machine's memory (None: the tasks run elsewhere), a task larger than its share
    (``check_size``). Returns the configuration's records per epoch. Each is built once here."""
    data_set = dataset(config.data)
    model = build_model(config.model, data_set)  # (refuses a model that cannot take the data)
    r = records_per_epoch(config, len(data_set.y_train), strict=strict)
    if workers is not None:
        _check_size(config, data_set, model, r, workers=workers, count=count)
    return r


def check_size(config: Config, *, workers: int = 1, count: int | None = None) -> None:
    """Refuse a 1-D configuration whose largest task does not fit in its worker's share of the memory budget,
    from shapes alone, before any parameters exist: the block's networks with their optimiser state, their
    records, the data, and one group's step (``engine.group_bytes``, over the chunks of examples the configuration
    fixes: ``engine.configured_examples``). ``count``: initial conditions a task trains (default: the
    configuration's block). Raises ``engine.BudgetError``."""
    data_set = dataset(config.data)
    _check_size(config, data_set, build_model(config.model, data_set), records_per_epoch(config, len(data_set.y_train)),
                workers=workers, count=count)


def _check_size(config: Config, data_set, model, per_epoch: int, *, workers: int, count: int | None) -> None:
    import jax

    from chaosgd.engine import BudgetError, configured_examples, group_bytes, memory_budget_and_source
    from chaosgd.objective import classification

    one = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    state = jax.eval_shape(config.rule.optimizer.init, one)
    arrays = {f"{x}_{split}": jax.ShapeDtypeStruct(getattr(data_set, f"{x}_{split}").shape,
                                                   config.model.dtype if x == "x" else "int32")
              for x in ("x", "y") for split in ("train", "test")}  # (as Dataset.arrays makes them)
    members = 1 + config.ensemble.copies
    n_records = config.training.epochs * per_epoch + 1
    # Each initial condition: its networks as built, on the device and in a chunk, with their optimiser state;
    # its records (loss, accuracies, distances, in float64) twice (the chunks' and their concatenation).
    per_initial = (members * (3 * _size(one) + _size(state))
                   + 2 * 8 * n_records * (members + members + (members - 1) + 1))
    count = min(count or config.block, config.ensemble.initial)
    budget, source = memory_budget_and_source()
    share = budget / max(1, workers)
    # The step's gradient over chunks of examples, as the configuration fixes them (engine.configured_examples).
    objective = classification(model)
    examples = config.training.examples_per_chunk or configured_examples(objective, one, arrays, members)
    fixed = group_bytes(objective, one, arrays, members, examples) + _size(arrays)
    needed = fixed + count * per_initial
    if needed <= share:
        return
    fits = int((share - fixed) // per_initial)
    shared = f", shared by {workers} worker processes" if workers > 1 else ""
    raise BudgetError(
        f"a task of {count} initial condition(s), each a reference and {members - 1} copies of "
        f"{_size(one, itemsize=False):,} parameters trained for {config.training.epochs} epochs, needs about "
        f"{needed / 2**30:.3g} GiB ({needed} bytes), more than its memory budget of {share / 2**30:.3g} GiB "
        f"({int(share)} bytes, from {source}{shared}). Use "
        + (f"a smaller block (block = {fits} fits), " if fits >= 1 else "")
        + "fewer copies (ensemble.copies), fewer epochs or a smaller model, float32 (model.dtype, with a larger "
        "ensemble.epsilon), a smaller training subset (data.n_train)"
        + (", fewer workers (--workers)" if workers > 1 else "")
        + ", or a larger budget (CHAOSGD_MEMORY_BUDGET=<bytes>).", needed, share)


def records_per_epoch(config: Config, n_train: int | None = None, *, strict: bool = False) -> int:
    """Records per epoch of a 1-D configuration: ``training.records_per_epoch``, which must divide the steps of an
    epoch; 1 with full batches (one step an epoch: the full-batch point of a sweep over the batch size), refused
    there if ``strict``. ``n_train``: the training set's size (default: that of ``config.data``)."""
    from chaosgd.dynamics import check_parts
    from chaosgd.experiments.config import ConfigError
    r = config.training.records_per_epoch
    n_train = len(dataset(config.data).y_train) if n_train is None else n_train
    steps = config.rule.steps_per_epoch(n_train)
    if steps == 1:
        if strict and r > 1:
            raise ConfigError(f"training.records_per_epoch: {r}, but batches of {config.training.batch_size} hold "
                              f"the whole training set of {n_train} examples: one step, so one record, an epoch")
        return 1
    try:
        check_parts(config.rule, n_train, r)
    except ValueError as error:
        raise ConfigError(f"training.records_per_epoch: {error}") from None
    return r


@float64
def build(config: Config) -> Problem:
    """The problem a configuration defines."""
    from chaosgd.objective import classification
    data_set = dataset(config.data)
    model = build_model(config.model, data_set)
    return Problem(data_set, model, classification(model, l2=config.training.l2), data_set.arrays(config.model.dtype))


@float64
def train(objective, model, arrays, eta: float, ensemble: Ensemble, *, first: int, count: int, epochs: int,
          plateau: int | None = None, stop_references_at: float | None = None, rule=None, progress=False,
          records_per_epoch: int = 1, examples_per_chunk: int | None = None):
    """Records of initial conditions ``first .. first + count - 1`` of ``model`` and their epsilon-balls, trained
    at ``eta`` for ``epochs``: the one path from a model to records, for configurations and users' models alike.

    ``plateau``: stop the copies once their exponent's fit is settled (``lyapunov.CopiesSettled``); None runs them
    every epoch (``plateau`` is in epochs). ``stop_references_at``, ``rule`` (the optimiser and minibatches),
    ``progress`` and ``records_per_epoch``: see ``engine.run``. ``examples_per_chunk``: see ``engine.run``; None:
    as the shapes fix it (``engine.configured_examples``).
    """
    import jax

    from chaosgd.engine import configured_examples, run
    from chaosgd.ensemble import epsilon_ball, initial_conditions
    from chaosgd.lyapunov import CopiesSettled

    # Chunks of examples fixed by the shapes, not the machine's memory: the same records on any machine.
    examples = examples_per_chunk or configured_examples(objective, jax.eval_shape(model.init,
                                                                                   jax.random.PRNGKey(0)),
                                                         arrays, 1 + ensemble.copies)
    centres = initial_conditions(model, count, seed=ensemble.seed, first=first)
    ball = epsilon_ball(centres, ensemble.copies, epsilon=ensemble.epsilon, perturb=ensemble.perturb,
                        seed=ensemble.seed, first=first)
    return run(objective, ball, eta, arrays, epochs=epochs, initial_condition=first + np.arange(count),
               stop_copies=CopiesSettled(plateau, records_per_epoch=records_per_epoch) if plateau is not None else None,
               stop_references_at=stop_references_at, rule=rule, progress=progress,
               records_per_epoch=records_per_epoch, distance=ensemble.distance, examples_per_chunk=examples)


@float64
def run_task(config: Config, task: Task, *, progress=False):
    """The records of one task: a pure function of (configuration, learning rate, initial conditions)."""
    config = task_config(config, task)
    return train_as_configured(build(config), config, task.eta, first=task.first, count=task.count,
                               progress=progress)


@float64
def train_as_configured(problem: Problem, config: Config, eta: float, *, first: int, count: int, progress=False):
    """``train`` with every setting of a 1-D ``config``, on ``problem`` (built from it, or a user's model and data)."""
    t = config.training
    return train(problem.objective, problem.model, problem.arrays, eta, config.ensemble, first=first, count=count,
                 epochs=t.epochs, plateau=config.analysis.plateau if t.stop_copies else None,
                 stop_references_at=t.target if t.stop_references else None, rule=config.rule, progress=progress,
                 records_per_epoch=records_per_epoch(config, len(problem.arrays["y_train"])),
                 examples_per_chunk=t.examples_per_chunk)


@float64
def task_sharpness(config: Config, task: Task):
    """Sharpness along the reference trajectory of initial condition 0, for the task that holds it, when
    ``training.sharpness_every`` > 0 (one track per learning rate: figure 14); else None."""
    import jax

    from chaosgd.ensemble import initial_conditions
    from chaosgd.sharpness import track_sharpness

    config = task_config(config, task)
    t = config.training
    if t.sharpness_every == 0 or task.first != 0:
        return None
    problem = build(config)
    params = jax.tree_util.tree_map(lambda x: x[0], initial_conditions(problem.model, 1, seed=config.ensemble.seed))
    return track_sharpness(problem.objective, params, task.eta, problem.arrays, epochs=t.epochs,
                           every=t.sharpness_every, method=t.sharpness_method, iterations=t.sharpness_iterations,
                           hessian_examples=t.sharpness_examples, seed=config.ensemble.seed, rule=config.rule,
                           top=t.sharpness_top, density_at=t.density_epochs)


def _size(tree, *, itemsize: bool = True) -> int:
    """Bytes (or entries) of a pytree of arrays or ``jax.ShapeDtypeStruct``s."""
    import jax
    return sum(math.prod(x.shape) * (x.dtype.itemsize if itemsize else 1) for x in jax.tree_util.tree_leaves(tree))
