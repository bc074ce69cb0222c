"""Experiments: configuration -> problem (data, model, objective) -> executor -> run store -> results and report.

``config`` and ``presets`` say what to run; ``problem`` turns a configuration into tasks and trains them; ``store``
keeps a run folder (checked task files, claims); ``executors`` run tasks here, in worker processes or on Dask;
``sweep`` ties these together; ``results`` fits the records; ``report`` draws them; ``search`` measures p for the
sweet-spot search.
"""

from chaosgd.experiments.config import Config, ConfigError
from chaosgd.experiments.presets import PRESETS, preset
from chaosgd.experiments.results import summarize
from chaosgd.experiments.store import RunDir
from chaosgd.experiments.sweep import Interrupted, sweep

__all__ = ["Config", "ConfigError", "PRESETS", "preset", "summarize", "RunDir", "Interrupted", "sweep"]
