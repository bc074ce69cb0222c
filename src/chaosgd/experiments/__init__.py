"""Experiments: configuration -> plan -> executor -> run store -> results and report.

``config`` and ``presets`` say what to run; ``plan`` makes a configuration ready once (pinned, checked, its hash,
points, tasks, run folder and ``Execution``, how its tasks run) and carries it down; ``problem`` defines what a
configuration trains (data, model, objective) and trains one task; ``store`` keeps a run folder (checked task files,
claims); ``executors`` run tasks here, in worker processes or on Dask; ``sweep`` runs a plan's tasks; ``results``
fits the records; ``report`` draws them; ``search`` measures a learning rate for the sweet-spot search.
"""

from chaosgd.experiments.config import Config, ConfigError
from chaosgd.experiments.executors import Execution
from chaosgd.experiments.plan import Plan, make_plan
from chaosgd.experiments.presets import PRESETS, preset
from chaosgd.experiments.results import summarize
from chaosgd.experiments.store import RunDir
from chaosgd.experiments.sweep import Interrupted, sweep

__all__ = ["Config", "ConfigError", "Execution", "Plan", "make_plan", "PRESETS", "preset", "summarize", "RunDir",
           "Interrupted", "sweep"]
