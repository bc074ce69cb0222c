"""One call from Python: a user's model and data, in memory, measured as a sweep measures them.

``measure`` trains an ensemble at each learning rate on the same path as ``chaosgd sweep`` (``problem.train``) and
fits it with the same estimators (``results.fit``): one row per learning rate, the columns of ``results.csv``.
``sweet_spot`` runs the learning-rate search on it. Settings are the configuration's fields by their short names
(``epsilon``, ``optimizer``, ``batch_size``, ``target``, ``plateau``, ...), with the configuration's defaults and
checks; nothing is written to disk.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from chaosgd.experiments.config import Analysis, Config, Ensemble, Training
from chaosgd.defaults import SEARCH_COPIES, SEARCH_INITIAL
from chaosgd.precision import float64

_SECTIONS = {"ensemble": Ensemble, "training": Training, "analysis": Analysis}
# Set by measure's own arguments, or what it does not do:
_NOT_HERE = {"etas", "axis", "axis_values", "sharpness_every", "sharpness_examples", "sharpness_method",
             "sharpness_iterations", "sharpness_top", "density_epochs"}


@dataclass(frozen=True)
class Measurement:
    """``table``: one row per learning rate (a pandas DataFrame with the columns of ``results.csv``);
    ``records``: the ``Records`` of each learning rate, by learning rate; ``config``: every setting used."""

    table: object
    records: dict
    config: Config


@float64
def measure(model, data, *, etas, initial: int = 10, copies: int = 3, epochs: int = 60, progress: bool = True,
            **settings) -> Measurement:
    """lambda_NMLE, p and the time to target accuracy of ``model`` on ``data`` at each learning rate in ``etas``.

    Args:
        model: a chaosgd model (``init``/``apply``: ``MLP``, ``FunctionModel``, ``from_flax``, ``from_equinox``) or a
            torch ``nn.Module`` (translated by ``from_torch``; images reach it channels-first).
        data: a ``Dataset`` (``datasets.as_dataset`` reads arrays, tensors and frames) or a dict of ``x_train,
            y_train, x_test, y_test``.
        etas: the learning rates.
        initial, copies, epochs: initial conditions |S|, perturbed copies M of each, epochs of training.
        progress: a progress bar per learning rate.
        settings: any other field of the configuration's ensemble, training or analysis sections by name, e.g.
            ``epsilon=1e-8, optimizer="momentum", momentum=0.9, batch_size=100, target=0.9, l2=1e-4``.
    """
    import pandas as pd

    from chaosgd.experiments.problem import Problem, records_per_epoch, train_as_configured
    from chaosgd.experiments.results import fit
    from chaosgd.objective import classification

    data_set = _dataset(data)
    model = as_model(model, data_set)
    config = _config(etas, initial, copies, epochs, settings)
    records_per_epoch(config, len(data_set.y_train), strict=True)  # refused before any training
    problem = Problem(data_set, model, classification(model, l2=config.training.l2), data_set.arrays())
    rows, records = [], {}
    for eta in config.training.etas:
        records[eta] = train_as_configured(problem, config, eta, first=0, count=initial, progress=progress)
        rows.append(fit(records[eta], config, n_classes=data_set.n_classes)[0])
    return Measurement(pd.DataFrame(rows), records, config)


@float64
def sweet_spot(model, data, *, eta_min: float = 0.01, eta_max: float = 20.0, initial: int = SEARCH_INITIAL,
               copies: int = SEARCH_COPIES, epochs: int = 60, search: dict | None = None, **settings):
    """The learning rate to train ``model`` on ``data`` with (as ``measure`` takes them), and the onset of chaos
    beside it (``sweetspot.find_sweet_spot``, returning a ``SweetSpot``), searched from [eta_min, eta_max] with
    ``initial`` initial conditions and ``copies`` perturbed copies per evaluation, each trained ``epochs`` epochs.

    ``target`` (a setting, default 0.9) is the test accuracy that training progress is measured towards;
    ``search``: more options of ``find_sweet_spot`` (``p_high``, ``rel_width``, ``max_initial``, ``parallel``)."""
    from chaosgd.experiments.search import model_evaluator
    from chaosgd.sweetspot import find_sweet_spot

    data_set = _dataset(data)
    model = as_model(model, data_set)
    config = _config((1.0,), initial, copies, epochs, settings)
    e, t = config.ensemble, config.training
    evaluate = model_evaluator(model, data_set.arrays(), n_initial=initial, n_copies=copies, epsilon=e.epsilon,
                               perturb=e.perturb, distance=e.distance, epochs=epochs, seed=e.seed, l2=t.l2,
                               rule=config.rule, records_per_epoch=t.records_per_epoch, target=t.target,
                               n_classes=data_set.n_classes, chance_margin=config.analysis.chance_margin,
                               **config.analysis.fit)
    return find_sweet_spot(evaluate, eta_min=eta_min, eta_max=eta_max, **(search or {}))


@float64
def as_model(model, data_set):
    """``model`` as a chaosgd model for ``data_set``: a torch module is translated (``from_torch``) and checked on
    the data's first examples; a model must output one logit per class and have float64 parameters."""
    import sys

    from chaosgd.models.base import check_model

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from chaosgd.models.pytorch import from_torch_for_data
        model = from_torch_for_data(model, data_set.x_train[:8])
    if not (callable(getattr(model, "init", None)) and callable(getattr(model, "apply", None))):
        raise TypeError(f"model must have init(key) and apply(params, x), or be a torch nn.Module; got "
                        f"{type(model).__name__}")
    try:
        check_model(model, data_set.example_shape, data_set.n_classes)
    except ValueError as error:
        raise ValueError(f"the model: {error}") from None
    return model


def _dataset(data):
    from chaosgd.datasets import Dataset, from_arrays
    if isinstance(data, Dataset):  # built by hand, it may never have been checked: the same checks as arrays
        return from_arrays(data.x_train, data.y_train, data.x_test, data.y_test, name=data.name,
                           n_classes=data.n_classes)
    if isinstance(data, dict):
        keys = ("x_train", "y_train", "x_test", "y_test")
        if set(data) != set(keys):
            raise ValueError(f"a data dict holds exactly {', '.join(keys)}; this one lacks "
                             f"{', '.join(k for k in keys if k not in data) or 'nothing'} and has "
                             f"{', '.join(sorted(map(str, set(data) - set(keys)))) or 'nothing'} besides")
        return from_arrays(**data)
    raise TypeError("data must be a Dataset (datasets.as_dataset) or a dict of x_train, y_train, x_test, y_test; got "
                    f"{type(data).__name__}")


def _config(etas, initial, copies, epochs, settings) -> Config:
    """A configuration holding every setting, checked by the configuration's own rules."""
    where = {f.name: section for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)
             if f.name not in _NOT_HERE}
    unknown = sorted(set(settings) - set(where))
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(where))}")
    if isinstance(etas, (str, bytes)) or not hasattr(etas, "__iter__") or np.ndim(etas) > 1:
        raise TypeError(f"etas must be a list of learning rates, e.g. [0.1, 1.0]; got {etas!r}")
    etas = list(etas)
    bad = [e for e in etas if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, float, np.number))]
    if bad:  # (float() would take True as 1.0 and "0.1" as 0.1)
        raise TypeError(f"etas must be numbers; got {bad[0]!r} ({type(bad[0]).__name__})")
    values = {"ensemble": {"initial": initial, "copies": copies},
              "training": {"etas": [float(e) for e in etas], "epochs": epochs}, "analysis": {}}
    for name, value in settings.items():
        values[where[name]][name] = value
    return Config.from_dict({"name": "measure", **values})  # ConfigError names what is wrong
