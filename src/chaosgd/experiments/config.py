"""Experiment configuration: frozen dataclasses that map one-to-one onto TOML tables and command-line options.

Every default lives here, with its help text; the command line is these fields. A configuration is checked once, when
it is built, by each field's declared type and range, whether it comes from Python, a TOML file or ``--set`` text:
every error names the field (``training.etas``), what was given and what is allowed. ``Config.hash()`` identifies a
configuration, so a run folder refuses to resume with another one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from chaosgd.datasets import CLASSES, DATASETS, NAMED
from chaosgd.defaults import EPSILON_MAX
from chaosgd.models.source import SOURCE_PATTERN
from chaosgd.experiments.fields import ConfigError, from_text, require, typed
from chaosgd.engine import DISTANCES
from chaosgd.ensemble import PERTURB_MODES
from chaosgd.lyapunov import LAMBDA_MIN, PLATEAU, R2_MIN
from chaosgd.models import ACTIVATIONS, ARCHITECTURES
from chaosgd.models.base import DTYPES
from chaosgd.optimizers import NAMES as OPTIMIZERS, READS, SCHEDULE_READS, SCHEDULES, SPECS, STATELESS
from chaosgd.sharpness import METHODS as SHARPNESS_METHODS

# The paper's learning-rate grid (DESIGN.md).
# Within this of chance accuracy a network has learnt nothing (Iris at eta >= 2.5 ends at exactly 1/3).
CHANCE_MARGIN = 0.05
PAPER_ETAS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0)
# A name becomes a folder under the runs folder: no separators, no leading dot, nothing that escapes it.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Beyond these a run cannot be represented: JAX's random keys take seeds of 64-bit signed integers, and compiled
# programs count initial conditions and records (epochs x records per epoch) in int32.
SEED_MAX = 2**63 - 1
COUNT_MAX = 2**31 - 1
# Task files of one run folder: far beyond any sweep worth running, and few enough to list and check quickly.
TASKS_MAX = 1_000_000


_require = require  # short local name for the many range checks below


def _field(default, help: str, **kwargs):
    """A field with its default and the help text the command line shows."""
    if isinstance(default, (tuple, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


class _Section:
    """Checks every field against its declared type before the section's own range checks (``_check``)."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            if f.name in _SECTIONS:
                continue
            value = typed(getattr(self, f.name), hints[f.name], self._where(f.name))
            object.__setattr__(self, f.name, value)
        self._check()

    def _where(self, name: str) -> str:
        section = _SECTION_NAMES.get(type(self))
        return f"{section}.{name}" if section else name

    def _check(self) -> None:
        pass


@dataclass(frozen=True)
class Data(_Section):
    """Which data set, and how it is prepared."""

    name: str = _field("iris", f"data set: one of {', '.join(DATASETS)}")
    path: str | None = _field(None, "folder holding <name>/ (default: $CHAOSGD_DATA, then ~/.chaosgd/data); for "
                                    "npz: the .npz file holding x_train, y_train, x_test, y_test")
    standardize: bool = _field(False, "standardise each feature by training-set statistics (the paper does not)")
    n_train: int | None = _field(None, "keep only the first n training examples (default: all)")
    n_test: int | None = _field(None, "keep only the first n test examples (default: all): the test accuracy and the "
                                      "time to the target are measured on them")
    seed: int = _field(0, "seed of the train/test split of Iris and of the sklearn: data sets, and of the synthetic "
                          "blobs")
    sha256: str | None = _field(None, "npz only: the file's SHA-256, filled in when a run starts; a file that no "
                                      "longer matches is refused")

    def _check(self):
        _require(self.name in DATASETS, "data.name", f"unknown data set {self.name!r}; choose one of {list(DATASETS)}")
        named = NAMED[self.name]
        _require(named.seeded or self.seed == 0, "data.seed",
                 f"{self.seed}, but data set {self.name!r} draws nothing from a seed (its split is fixed): a value "
                 "set and never used")
        _require(named.reads_path or self.path is None, "data.path",
                 f"{self.path!r}, but data set {self.name!r} reads no file (it {named.origin}): a value set and never "
                 "used. For your own data: data.name = 'npz', data.path = the .npz file")
        _require(self.name != "npz" or self.path is not None, "data.path",
                 "data.name = 'npz' needs data.path = the .npz file (x_train, y_train, x_test, y_test)")
        _require(self.sha256 is None or self.name == "npz", "data.sha256",
                 f"only an npz data set has a digest; got one with data.name = {self.name!r}")
        _require(self.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", self.sha256) is not None, "data.sha256",
                 f"must be 64 lowercase hexadecimal digits (a SHA-256); got {self.sha256!r}")
        _require(self.n_train is None or self.n_train >= 1, "data.n_train", f"must be >= 1; got {self.n_train}")
        _require(self.n_test is None or self.n_test >= 1, "data.n_test", f"must be >= 1; got {self.n_test}")
        _require(0 <= self.seed <= SEED_MAX, "data.seed", f"must be an integer in [0, 2^63 - 1]; got {self.seed}")


BUILT_IN_MODEL = ("architecture", "hidden", "activation", "sigma", "dropout")  # what model.source replaces


@dataclass(frozen=True)
class Model(_Section):
    """The network: an MLP (the paper's) or its small CNN."""

    architecture: str = _field("mlp", f"one of {', '.join(ARCHITECTURES)}")
    hidden: tuple[int, ...] = _field((64,), "hidden widths of the MLP, e.g. [32, 32]")
    activation: str = _field("tanh", f"one of {', '.join(sorted(ACTIVATIONS))}")
    sigma: float | None = _field(None, "weights ~ N(0, sigma^2) (default: 1 for MLPs, 0.01 for the CNN)")
    dtype: str = _field("float64", f"one of {', '.join(DTYPES)} (epsilon = 1e-8 needs float64)")
    dropout: float = _field(0.0, "MLP only: probability of dropping each hidden unit in training (masks shared by a "
                                 "reference and its copies, see training.shared_noise)")
    source: str | None = _field(None, "your own model: 'package.module:function', a factory returning it (given "
                                      "example_shape and n_classes if it names them); replaces architecture. It "
                                      "runs that module's code, as `python -m` would: run configuration files "
                                      "you trust")
    source_sha256: str | None = _field(None, "with source: the module file's SHA-256, filled in when a run "
                                             "starts; a changed file is refused")

    def _check(self):
        _require(self.architecture in ARCHITECTURES, "model.architecture",
                 f"unknown architecture {self.architecture!r}; choose one of {list(ARCHITECTURES)}")
        _require(len(self.hidden) > 0 and all(h >= 1 for h in self.hidden), "model.hidden",
                 f"must be a non-empty list of integers >= 1; got {list(self.hidden)}")
        _require(self.activation in ACTIVATIONS, "model.activation",
                 f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        _require(self.sigma is None or self.sigma > 0, "model.sigma", f"must be > 0; got {self.sigma}")
        _require(self.dtype in DTYPES, "model.dtype", f"unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}")
        _require(0 <= self.dropout < 1, "model.dropout", f"must be in [0, 1); got {self.dropout}")
        _require(self.dropout == 0 or self.architecture == "mlp", "model.dropout",
                 f"dropout is an option of the MLP only; got {self.dropout} with architecture {self.architecture!r}")
        if self.source is not None:
            _require(SOURCE_PATTERN.fullmatch(self.source) is not None, "model.source",
                     f"must look like 'package.module:function'; got {self.source!r}")
            built_in = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                        for f in fields(Model) if f.name in BUILT_IN_MODEL}
            changed = [name for name, default in built_in.items() if getattr(self, name) != default]
            _require(not changed, "model.source", f"your model replaces the built-in one, but model."
                     f"{', model.'.join(changed)} {'is' if len(changed) == 1 else 'are'} set too: a value set and "
                     "never used; remove it")
        _require(self.source_sha256 is None or self.source is not None, "model.source_sha256",
                 "a digest without model.source")
        _require(self.source_sha256 is None or re.fullmatch(r"[0-9a-f]{64}", self.source_sha256) is not None,
                 "model.source_sha256", f"must be 64 lowercase hexadecimal digits (a SHA-256); got "
                                        f"{self.source_sha256!r}")

    @property
    def weight_scale(self) -> float:
        return self.sigma if self.sigma is not None else (0.01 if self.architecture == "cnn" else 1.0)


@dataclass(frozen=True)
class Ensemble(_Section):
    """Initial conditions S and the epsilon-ball of perturbed copies around each."""

    initial: int = _field(50, "initial conditions |S|")
    copies: int = _field(5, "perturbed copies M per initial condition")
    epsilon: float = _field(1e-8, "radius of the epsilon-ball (uniform noise in [-epsilon, epsilon])")
    perturb: str = _field("all", f"parameters the ball perturbs: {' | '.join(PERTURB_MODES)} (the paper's text: all; "
                                 "its code: weights)")
    seed: int = _field(0, "seed of the initial conditions and their perturbations")
    distance: str = _field("parameters", f"what the L1 distance of a copy to its reference sums over: "
                                         f"{' | '.join(DISTANCES)} (state: the parameters and the optimiser's state, "
                                         "e.g. the momentum buffer)")

    def _check(self):
        _require(1 <= self.initial <= COUNT_MAX, "ensemble.initial",
                 f"must be an integer in [1, 2^31 - 1]; got {self.initial}")
        _require(1 <= self.copies <= COUNT_MAX, "ensemble.copies", f"M must be an integer in [1, 2^31 - 1]; got "
                                                                   f"{self.copies}")
        _require(self.epsilon > 0, "ensemble.epsilon", f"must be a finite number > 0; got {self.epsilon}")
        _require(self.perturb in PERTURB_MODES, "ensemble.perturb",
                 f"unknown mode {self.perturb!r}; choose one of {list(PERTURB_MODES)}")
        _require(0 <= self.seed <= SEED_MAX, "ensemble.seed",
                 f"must be an integer in [0, 2^63 - 1]; got {self.seed}")
        _require(self.distance in DISTANCES, "ensemble.distance",
                 f"unknown choice {self.distance!r}; choose one of {list(DISTANCES)}")


# Fields a 2-D sweep may vary together with eta (``training.axis``); model.width sets every hidden layer's width,
# model.depth the number of hidden layers (each as wide as the first).
AXES = ("training.batch_size", "training.momentum", "training.b1", "training.b2", "training.weight_decay",
        "training.l2", "model.width", "model.depth", "model.sigma", "model.dropout", "ensemble.epsilon")


@dataclass(frozen=True)
class Training(_Section):
    """Training over a grid of learning rates: full-batch gradient descent (the paper's), or any optimiser with
    minibatches."""

    etas: tuple[float, ...] = _field(PAPER_ETAS, "learning rates, e.g. [0.1, 1, 10] (default: the paper's grid); the "
                                                 "peak rate under a schedule")
    axis: str | None = _field(None, "a second axis swept with eta (a 2-D sweep): one of " + ", ".join(AXES))
    axis_values: tuple[float, ...] = _field((), "the values of the second axis, e.g. [100, 1000, 10000]")
    epochs: int = _field(201, "epochs T (an epoch is one pass over the training set: one step of full-batch GD)")
    optimizer: str = _field("gd", f"update rule: {' | '.join(OPTIMIZERS)} (gd: the paper's full-batch gradient "
                                  "descent; the others from optax)")
    momentum: float = _field(0.9, "momentum, nesterov: the momentum beta (m = g + beta m)")
    b1: float = _field(0.9, "adam, adamw: decay of the first moment")
    b2: float = _field(0.999, "adam, adamw: decay of the second moment")
    eps: float = _field(1e-8, "adam, adamw: added to the root of the second moment; rmsprop: added under the root")
    weight_decay: float = _field(1e-4, "adamw: decoupled weight decay")
    decay: float = _field(0.9, "rmsprop: decay of the squared gradients' average")
    schedule: str = _field("constant", f"learning-rate schedule: {' | '.join(SCHEDULES)} (warmup_cosine: linear "
                                       "warm-up to eta, cosine to 0 at the last epoch; step: times decay_factor every "
                                       "decay_every epochs)")
    warmup_epochs: int = _field(0, "warmup_cosine: epochs of linear warm-up")
    decay_every: int = _field(0, "step: epochs between decays")
    decay_factor: float = _field(0.1, "step: factor of each decay")
    batch_size: int = _field(0, "examples per step (0: the full training set, one step per epoch)")
    records_per_epoch: int = _field(1, "minibatches: record distances, loss and accuracy this many times an epoch, "
                                       "every steps/records_per_epoch steps, to resolve an expansion faster than an "
                                       "epoch (a divisor of the steps of an epoch; full-batch points record once)")
    shared_noise: bool = _field(True, "a reference and its copies share minibatch order and dropout masks (false: "
                                      "each copy its own, which measures the noise instead of the map's sensitivity)")
    l2: float = _field(0.0, "L2 coefficient lambda in L + lambda/2 |W|^2")
    examples_per_chunk: int | None = _field(None, "full-batch gradients, losses and accuracies over chunks of this "
                                                  "many examples (the same to roundoff, in less memory); default: "
                                                  "all at once when a group's step needs at most 16 GiB, else "
                                                  "chunks of about 4 GiB")
    target: float = _field(0.9, "test accuracy that defines the training time, a fraction in (0, 1]")
    target_hold: int = _field(1, "epochs the test accuracy must stay at or above the target (1: first passage, "
                                 "the paper's)")
    stop_copies: bool = _field(True, "stop perturbed copies once their exponent's fit is settled (analysis."
                                     "plateau; saves work). The rest are then computed in smaller groups, which "
                                     "moves last-bit rounding that chaos amplifies: in the chaotic regime results "
                                     "agree statistically, not bit for bit")
    stop_references: bool = _field(False, "stop a reference once it reached the target and its copies stopped")
    sharpness_every: int = _field(0, "track the top Hessian eigenvalue of initial condition 0 every this many "
                                     "epochs (0: not tracked)")
    sharpness_examples: int | None = _field(None, "Hessian on a fixed random subset of this many training examples "
                                                  "(default: all)")
    sharpness_method: str = _field("lanczos", f"eigenvalue method: {' | '.join(SHARPNESS_METHODS)} (lanczos: the "
                                              "largest algebraic; power: the paper's, the largest magnitude)")
    sharpness_iterations: int = _field(20, "Hessian-vector products per sharpness estimate")
    sharpness_top: int = _field(1, "Hessian eigenvalues tracked, largest first (lanczos; 1: the sharpness alone); "
                                   "each is drawn against the stability limit")
    density_epochs: tuple[int, ...] = _field((), "epochs at which the Hessian's spectral density (stochastic Lanczos "
                                                 "quadrature) is estimated along the tracked trajectory, e.g. [0, 200]")

    def _check(self):
        _require(len(self.etas) > 0, "training.etas", "the learning-rate grid is empty")
        _require(all(e > 0 for e in self.etas), "training.etas",
                 f"every learning rate must be finite and > 0; got {list(self.etas)}")
        _require(len(set(self.etas)) == len(self.etas), "training.etas",
                 f"learning rates must not repeat; got {list(self.etas)}")
        _require(self.epochs >= 1, "training.epochs", f"must be an integer >= 1; got {self.epochs}")
        _require(self.axis is None or self.axis in AXES, "training.axis",
                 f"unknown axis {self.axis!r}; choose one of {list(AXES)}")
        _require((self.axis is None) == (not self.axis_values), "training.axis_values",
                 "give training.axis and its values together" if self.axis else
                 f"values without an axis; set training.axis (one of {list(AXES)})")
        _require(len(set(self.axis_values)) == len(self.axis_values), "training.axis_values",
                 f"values must not repeat; got {list(self.axis_values)}")
        _require(self.sharpness_every == 0 or self.axis is None, "training.sharpness_every",
                 "sharpness is tracked in sweeps over eta alone; set training.axis = none and its field to one value")
        _require(self.sharpness_every == 0 or self.schedule == "constant", "training.sharpness_every",
                 f"the stability limit moves with the learning rate, which the {self.schedule} schedule changes every "
                 "step; track sharpness under the constant schedule")
        _require(self.sharpness_examples is None or self.batch_size == 0, "training.sharpness_examples",
                 "the batch sharpness of minibatch training uses the epoch's own minibatches; leave "
                 "sharpness_examples unset")
        self._check_update_rule()
        _require(self.l2 >= 0, "training.l2", f"must be >= 0; got {self.l2}")
        _require(self.examples_per_chunk is None or self.examples_per_chunk >= 1, "training.examples_per_chunk",
                 f"must be an integer >= 1 or absent; got {self.examples_per_chunk}")
        _require(0 < self.target <= 1, "training.target", f"must be a fraction in (0, 1]; got {self.target}")
        _require(1 <= self.target_hold <= self.epochs, "training.target_hold",
                 f"must be an integer in [1, epochs = {self.epochs}]; got {self.target_hold}")
        _require(self.target_hold == 1 or not self.stop_references, "training.target_hold",
                 "stop_references stops a reference at its first passage, before a held target could be seen; "
                 "set training.stop_references = false to use target_hold > 1")
        _require(self.sharpness_every >= 0, "training.sharpness_every",
                 f"must be an integer >= 0 (0: not tracked); got {self.sharpness_every}")
        _require(self.sharpness_examples is None or self.sharpness_examples >= 1, "training.sharpness_examples",
                 f"must be an integer >= 1 or absent; got {self.sharpness_examples}")
        _require(self.sharpness_method in SHARPNESS_METHODS, "training.sharpness_method",
                 f"unknown method {self.sharpness_method!r}; choose one of {list(SHARPNESS_METHODS)}")
        _require(self.sharpness_iterations >= 1, "training.sharpness_iterations",
                 f"must be an integer >= 1; got {self.sharpness_iterations}")
        self._check_spectrum()
        spec = SPECS.get(self.optimizer)
        _require(self.sharpness_every == 0 or spec is None or spec.limit is not None, "training.sharpness_every",
                 f"no stability limit is defined here for {self.optimizer} ({spec and spec.no_limit}); track "
                 "sharpness with another optimizer, or set sharpness_every = 0")

    def _check_spectrum(self) -> None:
        tracked = self.sharpness_every > 0
        _require(self.sharpness_top >= 1, "training.sharpness_top",
                 f"must be an integer >= 1; got {self.sharpness_top}")
        for name, used in (("sharpness_top", self.sharpness_top > 1), ("density_epochs", bool(self.density_epochs))):
            _require(not used or tracked, f"training.{name}",
                     "the spectrum is measured along the tracked trajectory: set training.sharpness_every > 0 too")
            _require(not used or self.batch_size == 0, f"training.{name}",
                     "minibatch training tracks the batch sharpness, one number per epoch, not the Hessian's "
                     "spectrum; use full batches (batch_size = 0)")
        _require(self.sharpness_top == 1 or self.sharpness_method == "lanczos", "training.sharpness_top",
                 "power iteration finds one eigenvalue; several need sharpness_method = lanczos")
        _require(self.sharpness_top == 1 or self.sharpness_iterations >= 3 * self.sharpness_top,
                 "training.sharpness_top", f"{self.sharpness_top} eigenvalues need at least {3 * self.sharpness_top} "
                 f"Lanczos steps (Ritz values converge from the top down; max(6k, 30) is safer); "
                 f"sharpness_iterations is {self.sharpness_iterations}")
        _require(all(0 <= e <= self.epochs for e in self.density_epochs), "training.density_epochs",
                 f"must be epochs in [0, epochs = {self.epochs}]; got {list(self.density_epochs)}")
        _require(len(set(self.density_epochs)) == len(self.density_epochs), "training.density_epochs",
                 f"epochs must not repeat; got {list(self.density_epochs)}")

    def _check_update_rule(self) -> None:
        _require(self.optimizer in OPTIMIZERS, "training.optimizer",
                 f"unknown optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        _require(self.schedule in SCHEDULES, "training.schedule",
                 f"unknown schedule {self.schedule!r}; choose one of {list(SCHEDULES)}")
        for name in ("momentum", "b1", "b2", "decay"):
            _require(0 <= getattr(self, name) < 1, f"training.{name}", f"must be in [0, 1); got {getattr(self, name)}")
        _require(self.eps > 0, "training.eps", f"must be > 0; got {self.eps}")
        _require(self.weight_decay >= 0, "training.weight_decay", f"must be >= 0; got {self.weight_decay}")
        _require(0 <= self.warmup_epochs < self.epochs, "training.warmup_epochs",
                 f"must be an integer in [0, epochs = {self.epochs}); got {self.warmup_epochs}")
        _require(self.decay_every >= (1 if self.schedule == "step" else 0), "training.decay_every",
                 f"must be an integer >= 1 with the step schedule (>= 0 otherwise); got {self.decay_every}")
        _require(0 < self.decay_factor <= 1, "training.decay_factor", f"must be in (0, 1]; got {self.decay_factor}")
        _require(self.batch_size >= 0, "training.batch_size",
                 f"must be an integer >= 0 (0: full batch); got {self.batch_size}")
        _require(self.records_per_epoch >= 1, "training.records_per_epoch",
                 f"must be an integer >= 1; got {self.records_per_epoch}")
        _require(self.epochs * self.records_per_epoch <= COUNT_MAX, "training.epochs",
                 f"{self.epochs} epochs x {self.records_per_epoch} record(s) an epoch is more records than a run can "
                 "count (2^31 - 1)")
        _require(self.records_per_epoch == 1 or self.batch_size or self.axis == "training.batch_size",
                 "training.records_per_epoch", "more than one record an epoch needs minibatches (training.batch_size "
                 "> 0): a full-batch epoch is one step")
        _require(self.records_per_epoch == 1 or self.sharpness_every == 0, "training.records_per_epoch",
                 "sharpness is tracked once an epoch; set training.sharpness_every = 0 or records_per_epoch = 1")
        # A hyperparameter set for an optimiser or schedule that does not read it would be ignored: refused.
        reads = READS[self.optimizer] + SCHEDULE_READS[self.schedule]
        for f in fields(self):
            if f.name in _UPDATE_FIELDS and f.name not in reads and getattr(self, f.name) != f.default:
                users = [n for n, r in {**READS, **SCHEDULE_READS}.items() if f.name in r]
                _require(False, f"training.{f.name}",
                         f"is read by {' and '.join(users)} only, not by optimizer {self.optimizer!r} with schedule "
                         f"{self.schedule!r}; leave it at its default ({f.default}) or choose "
                         f"{'an optimizer' if users[0] in READS else 'a schedule'} that reads it")

    def optimizer_spec(self):
        """The update rule these fields name (``optimizers.Optimizer``)."""
        from chaosgd.optimizers import Optimizer
        return Optimizer(self.optimizer, **{name: getattr(self, name) for name in _UPDATE_FIELDS},
                         schedule=self.schedule)


# The optimisers' and schedules' hyperparameters (fields of both Training and optimizers.Optimizer), and every
# field of the update rule (Config.rule).
_UPDATE_FIELDS = ("momentum", "b1", "b2", "eps", "weight_decay", "decay", "warmup_epochs", "decay_every",
                  "decay_factor")
UPDATE_RULE_FIELDS = ("optimizer", "schedule", "batch_size", "shared_noise") + _UPDATE_FIELDS


@dataclass(frozen=True)
class Analysis(_Section):
    """When a local exponent counts as positive, and when its fit is settled."""

    r2_min: float = _field(R2_MIN, "R^2 above which a local exponent can count as positive")
    lambda_min: float = _field(LAMBDA_MIN, "slope (per epoch) above which a local exponent counts as positive")
    plateau: int = _field(PLATEAU, "epochs of plateau after the knee of y(t) that settle the fit")
    chance_margin: float = _field(CHANCE_MARGIN, "a network whose final test accuracy is at most chance (1/classes) "
                                                 "plus this counts as stuck at chance")

    def _check(self):
        _require(0 <= self.r2_min <= 1, "analysis.r2_min", f"must be in [0, 1]; got {self.r2_min}")
        _require(0 <= self.chance_margin < 1, "analysis.chance_margin",
                 f"must be in [0, 1); got {self.chance_margin}")
        _require(bool(np.isfinite(self.lambda_min)) and self.lambda_min >= 0, "analysis.lambda_min",
                 f"must be a finite slope >= 0 (a negative one would count shrinking distances as chaos); got "
                 f"{self.lambda_min}")
        _require(self.plateau >= 1, "analysis.plateau", f"must be an integer >= 1; got {self.plateau}")

    @property
    def fit(self) -> dict:
        """The keyword arguments of ``lyapunov.network_exponent`` that these fields set."""
        return {"r2_min": self.r2_min, "lambda_min": self.lambda_min, "plateau": self.plateau}


_SECTIONS = {"data": Data, "model": Model, "ensemble": Ensemble, "training": Training, "analysis": Analysis}
_SECTION_NAMES = {cls: name for name, cls in _SECTIONS.items()}


@dataclass(frozen=True)
class Config(_Section):
    """A whole experiment: a grid of learning rates times |S| initial conditions times (1 + M) copies."""

    name: str = _field("custom", "name of the experiment; its run folder is <runs folder>/<name>")
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    ensemble: Ensemble = field(default_factory=Ensemble)
    training: Training = field(default_factory=Training)
    analysis: Analysis = field(default_factory=Analysis)
    block: int = _field(10, "initial conditions per sweep task (another block groups the networks differently, "
                            "which moves last-bit rounding: in the chaotic regime results agree statistically, not "
                            "bit for bit)")

    def _check(self):
        for name, cls in _SECTIONS.items():
            _require(isinstance(getattr(self, name), cls), name, f"expected a {cls.__name__} section")
        _require(NAME_PATTERN.fullmatch(self.name) is not None, "name",
                 f"{self.name!r} is not allowed: it names the run folder, so use 1-100 letters, digits, '.', '_' or "
                 "'-', starting with a letter or digit (no '/', no '..')")
        _require(self.block >= 1, "block", f"must be an integer >= 1; got {self.block}")
        points, etas = len(self.training.axis_values) or 1, len(self.training.etas)
        n_tasks = points * etas * -(-self.ensemble.initial // self.block)
        _require(n_tasks <= TASKS_MAX, "ensemble.initial",
                 f"{self.ensemble.initial} initial conditions in blocks of {self.block}, at {etas} learning rate(s)"
                 + (f" and {points} values of {self.training.axis}" if self.training.axis else "")
                 + f", make {n_tasks:,} tasks, more than a run folder holds ({TASKS_MAX:,}); use fewer initial "
                 "conditions or a larger block")
        classes = CLASSES.get(self.data.name)  # (a user's data set is checked when its classes are known: fit)
        _require(classes is None or 1 / classes + self.analysis.chance_margin < 1, "analysis.chance_margin",
                 f"{self.analysis.chance_margin:g}: chance on {self.data.name} is 1/{classes}, and chance plus the "
                 f"margin must stay below 1 (or every network counts as stuck at chance); use less than "
                 f"{1 - 1 / (classes or 1):.3g}")
        resolution = self.model.weight_scale * float(np.finfo(self.model.dtype).eps)
        _require(self.ensemble.epsilon > resolution, "ensemble.epsilon",
                 f"{self.ensemble.epsilon:g} is at or below the resolution of {self.model.dtype} for weights of "
                 f"size {self.model.weight_scale:g} (about {resolution:.2g}); use a larger epsilon"
                 + (' or model.dtype = "float64"' if self.model.dtype != "float64" else ""))
        _require(self.ensemble.epsilon <= EPSILON_MAX * self.model.weight_scale, "ensemble.epsilon",
                 f"{self.ensemble.epsilon:g} is not small against weights of size {self.model.weight_scale:g}: the "
                 "copies would start too far apart for an exponential phase to be measured (their distance "
                 f"saturates at once and p reads 0); use at most {EPSILON_MAX:g} x the weights' size "
                 f"({EPSILON_MAX * self.model.weight_scale:.2g}); the paper's is 1e-8")
        t = self.training
        _require(self.ensemble.distance == "parameters" or t.optimizer not in STATELESS, "ensemble.distance",
                 f"state, but optimizer {t.optimizer!r} keeps no state: the distance is over the parameters anyway; "
                 "leave it at \"parameters\"")
        _require(t.shared_noise or t.batch_size or self.model.dropout or t.axis is not None, "training.shared_noise",
                 "false, but full-batch training without dropout draws no noise to share; leave it true")
        if t.axis is not None:
            _require(t.axis not in ("model.width", "model.depth") or self.model.source is None, "training.axis",
                     f"{t.axis} changes the built-in MLP; your model (model.source) is built by its own factory")
            _require(t.axis not in ("model.width", "model.depth") or self.model.architecture == "mlp", "training.axis",
                     f"{t.axis} changes the MLP's hidden layers; the {self.model.architecture} has none")
            section, name = _split(t.axis) if t.axis not in ("model.width", "model.depth") else ("model", "hidden")
            if name != "hidden":  # (model.hidden gives the width and depth the axis keeps)
                default = next(f.default for f in fields(_SECTIONS[section]) if f.name == name)
                base = getattr(getattr(self, section), name)
                _require(base == default, t.axis, f"is {base!r} here but training.axis sweeps it over "
                                                  f"{list(t.axis_values)}: a value set and never used; leave it at "
                                                  f"its default ({default!r})")
            if section == "training" and name in _UPDATE_FIELDS:
                reads = READS[t.optimizer] + SCHEDULE_READS[t.schedule]
                _require(name in reads, "training.axis", f"{t.axis} is not read by optimizer {t.optimizer!r} with "
                                                         f"schedule {t.schedule!r}: every point would be the same")
        for value in self.training.axis_values:  # every point of a 2-D sweep must be a valid configuration
            try:
                self.at(value)
            except ConfigError as error:
                raise ConfigError(f"training.axis_values: at {self.training.axis} = {value:g}: {error}") from None

    @property
    def points(self) -> list[tuple[float | None, "Config"]]:
        """The 1-D sweeps a configuration holds: ``(value, config)`` for each value of ``training.axis``, or
        ``[(None, self)]`` without one."""
        if self.training.axis is None:
            return [(None, self)]
        return [(value, self.at(value)) for value in self.training.axis_values]

    def at(self, value: float) -> "Config":
        """This configuration at one value of its second axis, as a 1-D sweep (no axis)."""
        axis = self.training.axis
        values = self.to_dict()
        values["training"].update(axis=None, axis_values=())
        if axis in ("model.width", "model.depth"):
            _require(float(value).is_integer() and value >= 1, axis, f"must be an integer >= 1; got {value:g}")
            hidden = self.model.hidden
            values["model"]["hidden"] = ((int(value),) * len(hidden) if axis == "model.width"
                                         else (hidden[0],) * int(value))
        else:
            section, name = _split(axis)
            values[section][name] = value
        if axis == "training.batch_size" and value == 0:  # the full-batch point: one step, one record an epoch
            values["training"]["records_per_epoch"] = 1
        return Config.from_dict(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def value(self, key: str):
        """The value of a field by its dotted name (``training.epochs``)."""
        section, name = _split(key)
        return getattr(getattr(self, section) if section else self, name)

    def differences(self, other: "Config") -> dict[str, tuple]:
        """The fields whose values differ, as (this one's, ``other``'s) by dotted name."""
        return {key: (self.value(key), other.value(key)) for key in field_names()
                if self.value(key) != other.value(key)}

    @property
    def rule(self):
        """How each network is trained besides its learning rate (``dynamics.UpdateRule``): the optimiser, the
        minibatches, and the seed of their order and of dropout masks (the ensemble's)."""
        from chaosgd.dynamics import UpdateRule
        t = self.training
        return UpdateRule(t.optimizer_spec(), batch_size=t.batch_size, shared_noise=t.shared_noise,
                          seed=self.ensemble.seed)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Build from nested plain values (as TOML gives them); unknown keys are errors that list the known ones."""
        if not isinstance(values, dict):
            raise ConfigError(f"config: expected a table, got {values!r}")
        _require_known(values, cls, "config")
        kwargs = dict(values)
        for name, section in _SECTIONS.items():
            if name in values:
                sub = values[name]
                _require(isinstance(sub, dict), name, f"expected a table [{name}], got {sub!r}")
                _require_known(sub, section, name)
                kwargs[name] = section(**sub)
        return cls(**kwargs)

    def to_toml(self) -> str:
        lines = [f"name = {_toml_value(self.name)}", f"block = {self.block}"]
        for name in _SECTIONS:
            lines += ["", f"[{name}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(getattr(self, name)).items()
                      if v is not None]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, *, source: str = "configuration") -> "Config":
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{source}: not valid TOML: {error}") from None
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """Read a TOML file; a missing file, a folder, or text that is not UTF-8 is refused with the path named."""
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not a TOML configuration file")
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); save the configuration as UTF-8 "
                              "TOML") from None
        except OSError as error:
            raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
        return cls.from_toml(text, source=str(path))

    def hash(self) -> str:
        """SHA-256 of the canonical JSON of every field but the name and the data folder, which change no result
        (an npz file's content enters as ``data.sha256``, which must be pinned: ``problem.pinned``).

        Fields added after version 0.1.0 enter only when they differ from their default, so run folders made before
        keep their hash (and resume)."""
        known = self.__dict__.get("_hash")  # (a frozen configuration's hash is computed once: every task load asks)
        if known is not None:
            return known
        if self.model.source is not None and self.model.source_sha256 is None:
            raise ConfigError("model.source_sha256: the code of model.source is not pinned yet "
                              "(experiments.problem.pinned(config) fills it in from the module's file)")
        if self.data.name == "npz" and self.data.sha256 is None:
            raise ConfigError("data.sha256: an npz data set is identified by its content, which is not pinned yet "
                              "(experiments.problem.pinned(config) fills it in from the file)")
        values = self.to_dict()
        values.pop("name")
        values["data"].pop("path")
        for (section, name), default in _ADDED_LATER.items():
            if values[section][name] == default:
                values[section].pop(name)
        known = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
        object.__setattr__(self, "_hash", known)
        return known

    def with_values(self, **dotted) -> "Config":
        """A copy with fields replaced by dotted names, e.g. ``with_values(**{"training.epochs": 50})``."""
        values = self.to_dict()
        for key, value in dotted.items():
            section, name = _split(key)
            (values[section] if section else values)[name] = value
        return Config.from_dict(values)

    def with_text(self, assignments: list[str]) -> "Config":
        """A copy with ``FIELD=VALUE`` assignments (``--set``) applied, each VALUE parsed by the field's type."""
        return self.with_values(**dict(parse_assignment(item) for item in assignments))


# Fields added after 0.1.0 enter the hash only when set, so older run folders keep resuming.
_ADDED_LATER = {("data", "n_test"): None, ("training", "sharpness_every"): 0, ("training", "sharpness_examples"): None,
                ("training", "stop_references"): False, ("training", "sharpness_method"): "lanczos",
                ("training", "sharpness_iterations"): 20, ("training", "target_hold"): 1,
                ("training", "sharpness_top"): 1, ("training", "density_epochs"): (),
                ("training", "examples_per_chunk"): None,
                ("analysis", "chance_margin"): CHANCE_MARGIN, ("model", "dropout"): 0.0,
                ("training", "axis"): None, ("training", "axis_values"): (), ("training", "records_per_epoch"): 1,
                ("ensemble", "distance"): "parameters", ("data", "sha256"): None,
                ("model", "source"): None, ("model", "source_sha256"): None,
                **{("training", f.name): f.default for f in fields(Training) if f.name in UPDATE_RULE_FIELDS}}


def field_names() -> dict[str, dataclasses.Field]:
    """Every settable field by dotted name (``training.epochs``), in declaration order."""
    names = {}
    for f in fields(Config):
        if f.name in _SECTIONS:
            names.update({f"{f.name}.{g.name}": g for g in fields(_SECTIONS[f.name])})
        else:
            names[f.name] = f
    return names


def field_type(key: str):
    section, name = _split(key)
    return typing.get_type_hints(_SECTIONS[section] if section else Config)[name]


def parse_assignment(item: str) -> tuple[str, object]:
    """``("training.epochs", 50)`` from ``"training.epochs=50"`` (``--set``), parsed by the field's type."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set needs FIELD=VALUE, e.g. training.epochs=50; got {item!r}")
    return key, parse_text(key, text)


def parse_text(key: str, text: str):
    """The value of field ``key`` written as command-line text, parsed by the field's declared type.

    Booleans: true/false/yes/no/on/off/1/0 in any case; numbers as Python or TOML write them; lists as
    ``[1, 10]`` or ``1,10``; ``none`` for an optional field; strings as they are (quotes optional)."""
    return from_text(text.strip(), field_type(key), key)


def _split(key: str) -> tuple[str, str]:
    section, _, name = key.rpartition(".")
    if section:
        _require(section in _SECTIONS, key, f"unknown section {section!r}; known: {sorted(_SECTIONS)}")
        known = [f.name for f in fields(_SECTIONS[section])]
    else:
        known = [f.name for f in fields(Config) if f.name not in _SECTIONS]
        _require(name not in _SECTIONS, key, f"is a section; set one of its fields, e.g. {name}.<field>")
        _require(name in known, key, f"unknown field; known: {sorted(known)}, and the fields of the sections "
                                     f"{sorted(_SECTIONS)} (e.g. training.epochs; chaosgd sweep --help lists them)")
    _require(name in known, key, f"unknown field; known: {sorted(known)}")
    return section, name


def _require_known(values: dict, cls, where: str) -> None:
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    _require(not unknown, where, f"unknown field(s) {unknown}; known: {sorted(f.name for f in fields(cls))}")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)
