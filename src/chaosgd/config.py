"""Experiment configuration: frozen dataclasses that map one-to-one onto TOML tables and CLI options.

A configuration is validated once, when it is built; every error names the field (``training.etas``) and says what
is allowed. ``Config.hash()`` identifies a configuration, so a run folder can refuse to resume with another one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from chaosgd.datasets import DATASETS
from chaosgd.ensemble import PERTURB_MODES
from chaosgd.models import ACTIVATIONS, ARCHITECTURES
from chaosgd.models.base import DTYPES

# The paper's learning-rate grid (DESIGN.md).
PAPER_ETAS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0)


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the field."""


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


@dataclass(frozen=True)
class Data:
    """Which data set, and how it is prepared."""

    name: str = "iris"
    path: str | None = None  # folder holding <name>/; None: $CHAOSGD_DATA, then ~/.chaosgd/data
    standardize: bool = False
    n_train: int | None = None  # keep only the first n training examples (quick scales); None: all
    seed: int = 0  # Iris's train/test split and the synthetic blobs

    def __post_init__(self):
        _require(self.name in DATASETS, "data.name", f"unknown data set {self.name!r}; choose one of {list(DATASETS)}")
        _require(self.n_train is None or self.n_train >= 1, "data.n_train", f"must be >= 1; got {self.n_train}")


@dataclass(frozen=True)
class Model:
    architecture: str = "mlp"
    hidden: tuple[int, ...] = (64,)  # MLP hidden widths
    activation: str = "tanh"
    sigma: float | None = None  # weights ~ N(0, sigma^2); None: 1 for MLPs, 0.01 for the CNN
    dtype: str = "float64"

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        _require(self.architecture in ARCHITECTURES, "model.architecture",
                 f"unknown architecture {self.architecture!r}; choose one of {list(ARCHITECTURES)}")
        _require(all(isinstance(h, int) and h >= 1 for h in self.hidden), "model.hidden",
                 f"must be positive integers; got {list(self.hidden)}")
        _require(self.activation in ACTIVATIONS, "model.activation",
                 f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        _require(self.sigma is None or self.sigma > 0, "model.sigma", f"must be > 0; got {self.sigma}")
        _require(self.dtype in DTYPES, "model.dtype", f"unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}")

    @property
    def weight_scale(self) -> float:
        return self.sigma if self.sigma is not None else (0.01 if self.architecture == "cnn" else 1.0)


@dataclass(frozen=True)
class Ensemble:
    initial: int = 50  # |S|
    copies: int = 5  # M
    epsilon: float = 1e-8
    perturb: str = "all"  # "all" (the paper's text) | "weights" (its public code)
    seed: int = 0

    def __post_init__(self):
        _require(isinstance(self.initial, int) and self.initial >= 1, "ensemble.initial",
                 f"must be an integer >= 1; got {self.initial}")
        _require(isinstance(self.copies, int) and self.copies >= 1, "ensemble.copies",
                 f"M must be an integer >= 1; got {self.copies}")
        _require(math.isfinite(self.epsilon) and self.epsilon > 0, "ensemble.epsilon",
                 f"must be a finite number > 0; got {self.epsilon}")
        _require(self.perturb in PERTURB_MODES, "ensemble.perturb",
                 f"unknown mode {self.perturb!r}; choose one of {list(PERTURB_MODES)}")


@dataclass(frozen=True)
class Training:
    etas: tuple[float, ...] = PAPER_ETAS
    epochs: int = 201
    l2: float = 0.0
    target: float = 0.9  # test accuracy that defines the training time
    stop_copies: bool = True  # stop perturbed copies once their exponent's fit is settled (analysis.plateau)
    stop_references: bool = False  # stop a reference once it reached the target and its copies stopped (see README)
    sharpness_every: int = 0  # > 0: track the top Hessian eigenvalue of initial condition 0 every this many epochs
    sharpness_examples: int | None = None  # Hessian on a fixed random subset of this many training examples

    def __post_init__(self):
        object.__setattr__(self, "etas", tuple(float(e) for e in self.etas))
        _require(len(self.etas) > 0, "training.etas", "the learning-rate grid is empty")
        _require(all(math.isfinite(e) and e > 0 for e in self.etas), "training.etas",
                 f"every learning rate must be finite and > 0; got {list(self.etas)}")
        _require(len(set(self.etas)) == len(self.etas), "training.etas", "learning rates must not repeat")
        _require(isinstance(self.epochs, int) and self.epochs >= 1, "training.epochs",
                 f"must be an integer >= 1; got {self.epochs}")
        _require(math.isfinite(self.l2) and self.l2 >= 0, "training.l2", f"must be >= 0; got {self.l2}")
        _require(0 < self.target <= 1, "training.target", f"must be a fraction in (0, 1]; got {self.target}")
        _require(isinstance(self.sharpness_every, int) and self.sharpness_every >= 0, "training.sharpness_every",
                 f"must be an integer >= 0 (0: not tracked); got {self.sharpness_every}")
        _require(self.sharpness_examples is None or (isinstance(self.sharpness_examples, int)
                                                     and self.sharpness_examples >= 1),
                 "training.sharpness_examples", f"must be an integer >= 1 or absent; got {self.sharpness_examples}")


@dataclass(frozen=True)
class Analysis:
    r2_min: float = 0.9
    lambda_min: float = 0.05
    plateau: int = 40  # epochs of plateau after the knee of y(t) that settle the fit (lyapunov.local_exponent)

    def __post_init__(self):
        _require(0 <= self.r2_min <= 1, "analysis.r2_min", f"must be in [0, 1]; got {self.r2_min}")
        _require(isinstance(self.plateau, int) and self.plateau >= 1, "analysis.plateau",
                 f"must be an integer >= 1; got {self.plateau}")


@dataclass(frozen=True)
class Config:
    """A whole experiment: a grid of learning rates times |S| initial conditions times (1 + M) copies."""

    name: str = "custom"
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    ensemble: Ensemble = field(default_factory=Ensemble)
    training: Training = field(default_factory=Training)
    analysis: Analysis = field(default_factory=Analysis)
    block: int = 10  # initial conditions per sweep task

    def __post_init__(self):
        _require(isinstance(self.block, int) and self.block >= 1, "block", f"must be an integer >= 1; got {self.block}")
        resolution = self.model.weight_scale * float(np.finfo(self.model.dtype).eps)
        _require(self.ensemble.epsilon > resolution, "ensemble.epsilon",
                 f"{self.ensemble.epsilon:g} is at or below the resolution of {self.model.dtype} for weights of "
                 f"size {self.model.weight_scale:g} (about {resolution:.2g}); use model.dtype = \"float64\" or a "
                 f"larger epsilon")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Build from nested plain values (as TOML gives them); unknown keys are errors that list the known ones."""
        return _build(cls, values, "")

    def to_toml(self) -> str:
        lines = [f"name = {_toml_value(self.name)}", f"block = {self.block}"]
        for f in fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                lines += ["", f"[{f.name}]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(section).items() if v is not None]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str) -> "Config":
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"not valid TOML: {error}") from None
        return cls.from_dict(values)

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        return cls.from_toml(Path(path).read_text())

    def hash(self) -> str:
        """SHA-256 of the canonical JSON of every field but the name and the data folder, which change no result.

        Fields added after version 0.1.0 enter only when they differ from their default, so run folders made before
        keep their hash (and resume)."""
        values = self.to_dict()
        values.pop("name")
        values["data"].pop("path")
        for (section, name), default in _ADDED_LATER.items():
            if values[section][name] == default:
                values[section].pop(name)
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    def with_values(self, **dotted) -> "Config":
        """A copy with fields replaced by dotted names, e.g. ``with_values(**{"training.epochs": 50})``."""
        values = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.rpartition(".")
            target = values[section] if section else values
            _require(section in values or not section, key, "unknown section")
            _require(name in target, key, f"unknown field; known: {sorted(target)}")
            target[name] = value
        return Config.from_dict(values)


_ADDED_LATER = {("training", "sharpness_every"): 0, ("training", "sharpness_examples"): None,
                ("training", "stop_references"): False}


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    _require(not unknown, prefix.rstrip(".") or "config", f"unknown field(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        sub = {"data": Data, "model": Model, "ensemble": Ensemble, "training": Training, "analysis": Analysis}
        if cls is Config and name in sub:
            kwargs[name] = _build(sub[name], value, f"{name}.")
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except TypeError as error:  # a value of the wrong kind deep in a check
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {error}") from None


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
