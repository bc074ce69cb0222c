"""Evaluators for the learning-rate search (``chaosgd.sweetspot.find_sweet_spot``): sensitivity and trainability at
a learning rate (``chaosgd.evaluation``), measured for a configuration (through the same executors and run store as
sweeps, so an interrupted search resumes) or for a user's own model and arrays.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile

from chaosgd.experiments.config import UPDATE_RULE_FIELDS, Config, ConfigError, Ensemble, Training
from chaosgd.experiments.executors import Execution
from chaosgd.defaults import CONFIDENCE, SEARCH_COPIES, SEARCH_INITIAL
from chaosgd.evaluation import Evaluation, Evaluator
from chaosgd.experiments.plan import make_plan
from chaosgd.experiments.problem import Task, n_classes, train
from chaosgd.experiments.results import summarize
from chaosgd.experiments.store import TaskFileError
from chaosgd.precision import float64



def search_epochs(config: Config) -> int:
    """The default budget of an evaluation: half the configuration's epochs, at most 60 (the exponential phase and
    the start of training, where learning rates differ most in speed)."""
    return max(1, min(60, math.ceil(config.training.epochs / 2)))


class ConfigEvaluator(Evaluator):
    """A configuration's model, data and epsilon-ball, ``initial`` initial conditions with ``copies`` perturbed
    copies each (default: the configuration's), trained for ``epochs`` only (copies run every epoch); training
    progress towards the configuration's target, chance from its data's classes.

    Every evaluation is a task (at a learning rate off any grid) written to the run folder ``store`` (a temporary
    folder if None), and read back from it when it is already there, so a search that was stopped resumes where it
    was. Tasks run as ``executor``, ``workers``, ``scheduler`` and ``device`` say (``executors.Execution``; the
    executor's default here is serial); ``many`` runs several learning rates side by side on it.
    """

    def __init__(self, config: Config, *, epochs: int = 60, initial: int | None = None, copies: int | None = None,
                 confidence: float = CONFIDENCE, store=None, executor: str = "serial", workers: int | None = None,
                 scheduler: str | None = None, device: str | None = None, log=None):
        if config.training.axis is not None:
            raise ConfigError(f"the sweet-spot search takes one configuration; this one sweeps {config.training.axis} "
                              "too (training.axis): search at one of its values (Config.at(value))")
        if config.training.schedule != "constant":
            raise ConfigError(f"the sweet-spot search trains for its own number of epochs (--search-epochs), over "
                              f"which the {config.training.schedule} schedule would follow another path than the "
                              "sweep's; search under the constant schedule")
        ensemble = dataclasses.replace(config.ensemble, initial=initial or config.ensemble.initial,
                                       copies=copies or config.ensemble.copies)
        if config.training.target_hold > int(epochs):
            raise ConfigError(f"training.target_hold = {config.training.target_hold}: a passage needs that many "
                              f"epochs at the target, more than the search's {int(epochs)} (--search-epochs)")
        execution = Execution(executor, workers, scheduler, device=device)  # (refused before the data is read)
        super().__init__(ensemble.initial, confidence=confidence, target=config.training.target,
                         n_classes=n_classes(config.data), chance_margin=config.analysis.chance_margin,
                         hold=config.training.target_hold, **config.analysis.fit)
        # Only what shapes the records enters the search's store and its hash: not the sweep's grid (the search
        # picks its own learning rates; (1.0,) stands in), its target or sharpness tracking. Copies run every epoch.
        search = dataclasses.replace(config, ensemble=ensemble, training=Training(
            etas=(1.0,), epochs=int(epochs), l2=config.training.l2, stop_copies=False,
            records_per_epoch=config.training.records_per_epoch,
            **{name: getattr(config.training, name) for name in UPDATE_RULE_FIELDS}))
        # Refused before its store is made (a temporary one is removed again); an evaluation is one task of all its
        # initial conditions.
        self._pool = None
        self._temporary = None if store is not None else tempfile.mkdtemp(prefix="chaosgd-search-")
        try:
            plan = make_plan(search, store or self._temporary, count=ensemble.initial, execution=execution)
        except BaseException:
            self.close()
            raise
        self.config, self.hash = plan.config, plan.hash
        self.store = plan.run.prepare(self.config, log or (lambda *a: None))
        self.execution = plan.execution
        self.network_epochs_loaded = 0  # of the records found in the store (computed by an earlier search)

    @float64
    def records(self, eta, first, count):
        return self._run([Task(None, float(eta), int(first), int(count))])[0]

    @float64
    def many(self, etas) -> list[Evaluation]:
        etas = [float(e) for e in etas]
        fresh = [e for e in dict.fromkeys(etas) if e not in self._records]
        if len(fresh) > 1:
            for e, records in zip(fresh, self._run([Task(None, e, 0, self.n_initial) for e in fresh])):
                self._add(e, records)
        return [self(e) for e in etas]

    def _run(self, wanted: list[Task]):
        """Records of these tasks: from the store where it holds them, else computed on the executor."""
        from chaosgd.experiments.sweep import execute

        config_hash, found = self.hash, {}
        for task in wanted:
            try:
                found[task.name] = self.store.load_task(task, config_hash).records
                self.network_epochs_loaded += found[task.name].network_epochs
            except TaskFileError:
                pass
        missing = [t for t in wanted if t.name not in found]
        if not missing:  # (no workers started for nothing: a resumed search may find everything stored)
            return [found[t.name] for t in wanted]
        todo = iter(missing)
        toml, root = self.config.to_toml(), str(self.store.root)

        def source():
            task = next(todo, None)
            return None if task is None else (task.name, (toml, task, root))

        def on_result(name, _):
            task = next(t for t in wanted if t.name == name)
            found[name] = self.store.load_task(task, config_hash).records

        if self._pool is None:
            self._pool = self.execution.open()
        self._pool.map(execute, source, on_result)
        return [found[t.name] for t in wanted]

    def close(self) -> None:
        """Stop the executor's workers, and remove the temporary store if one was made."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


@float64
def config_evaluator(config: Config, **options) -> ConfigEvaluator:
    """``evaluate(eta)`` for a sweep configuration (see ``ConfigEvaluator`` for the options)."""
    return ConfigEvaluator(config, **options)


def stored_evaluations(run_dir, evaluator: ConfigEvaluator) -> dict[float, Evaluation]:
    """Evaluations of every finished learning rate of a sweep's run folder, marked as stored, for the search of
    ``evaluator``.

    A run of another problem (data, model, epsilon, update rule, L2 term or analysis differ) is refused, naming the
    fields, and so is one of another horizon: p and the training progress depend on the epochs trained (Iris at
    eta = 0.5: p = 48 % over 201 epochs, 40 % over 60), so a sweep is reused only by a search of its epoch budget
    (the message says which). Its numbers of initial conditions and of copies may differ: p's interval reflects the
    first; the second only smooths each exponent's fit."""
    like = evaluator.config
    summary = summarize(run_dir)
    config = summary.config
    if config.training.axis is not None:
        raise ConfigError(f"{run_dir} is a 2-D sweep (over eta and {config.training.axis}); --reuse takes a sweep "
                          "over eta alone")
    if config.training.epochs != like.training.epochs:
        raise ConfigError(f"{run_dir} trained {config.training.epochs} epochs and this search evaluates "
                          f"{like.training.epochs}: p and the training progress depend on the horizon, so they "
                          f"cannot be mixed; search with --search-epochs {config.training.epochs} to reuse it")
    differ = [f"{k} ({a!r} there, {b!r} here)" for k, (a, b) in _problem_fields(config, like).items() if a != b]
    if differ:
        raise ConfigError(f"{run_dir} is a run of another problem than this search: {'; '.join(differ)}. "
                          "--reuse needs the same data, model, epsilon, update rule, L2 term and analysis")
    finished = {row["eta"] for row in summary.rows}
    return {eta: evaluator.evaluation(summary.records(k), eta, stored=True)
            for k, eta in enumerate(config.training.etas) if eta in finished}


def _problem_fields(a: Config, b: Config) -> dict[str, tuple]:
    """The fields that define the trained problem, as (a's value, b's value) by dotted name."""
    pairs = {}
    for section in ("data", "model", "ensemble", "analysis"):
        for name, value in getattr(a, section).__dict__.items():
            if (section, name) not in (("data", "path"), ("ensemble", "initial"), ("ensemble", "copies")):
                pairs[f"{section}.{name}"] = (value, getattr(getattr(b, section), name))
    for name in ("l2", "records_per_epoch") + UPDATE_RULE_FIELDS:
        pairs[f"training.{name}"] = (getattr(a.training, name), getattr(b.training, name))
    return pairs


class ModelEvaluator(Evaluator):
    """Any model with ``init(key)`` and ``apply(params, x)`` (see ``models.FunctionModel``) on the user's arrays
    ``data = {"x_train", "y_train", "x_test", "y_test"}``, trained in this process."""

    def __init__(self, model, data, *, n_initial: int = SEARCH_INITIAL, n_copies: int = SEARCH_COPIES,
                 epsilon: float = 1e-8, epochs: int = 60, seed: int = 0, l2: float = 0.0,
                 confidence: float = CONFIDENCE, rule=None, records_per_epoch: int = 1, perturb: str = "all",
                 distance: str = "parameters", target: float = 0.9, n_classes: int | None = None,
                 chance_margin: float = 0.05, **fit):
        from chaosgd.objective import classification

        if n_classes is None:  # (the labels the data holds: chance is 1 / classes)
            n_classes = int(max(data["y_train"].max(), data["y_test"].max())) + 1
        super().__init__(n_initial, confidence=confidence, target=target, n_classes=n_classes,
                         chance_margin=chance_margin, **fit)
        if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1; got {epochs!r}")
        if self.trainability["hold"] > epochs:  # (before any training, not when the first records are judged)
            raise ValueError(f"hold = {self.trainability['hold']}: a passage needs that many epochs at the target, "
                             f"more than the {int(epochs)} epochs trained")
        self.model, self.data, self.epochs = model, data, int(epochs)
        self.ensemble = Ensemble(initial=n_initial, copies=n_copies, epsilon=epsilon, seed=seed, perturb=perturb,
                                 distance=distance)
        self.objective = classification(model, l2=l2)
        self.rule = rule  # dynamics.UpdateRule: the optimiser and minibatches (None: full-batch GD)
        self.records_per_epoch = records_per_epoch  # see engine.run

    @float64
    def records(self, eta, first, count):
        return train(self.objective, self.model, self.data, eta, self.ensemble, first=first, count=count,
                     epochs=self.epochs, rule=self.rule, records_per_epoch=self.records_per_epoch)


@float64
def model_evaluator(model, data, **options) -> ModelEvaluator:
    """``evaluate(eta)`` for any model with ``init(key)`` and ``apply(params, x)`` and the user's own arrays (see
    ``ModelEvaluator`` for the options)."""
    return ModelEvaluator(model, data, **options)
