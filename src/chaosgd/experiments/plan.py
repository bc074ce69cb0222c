"""A sweep's plan: what a configuration becomes before anything runs, made once and carried down the sweep, the
sweet-spot search and the report, so that none of them goes back to the configuration for it.

``make_plan`` pins the configuration (``problem.pinned``: its hash then names the files it reads), refuses what
cannot run (a run folder inside another run, data missing, a model that does not fit the data, records that do not
divide an epoch, a task larger than its memory share) before any folder exists, and fixes the configuration's
points on the second axis (each a 1-D configuration with its records per epoch), its tasks, its run folder and how
its tasks run (``executors.Execution``, checked when it was built). While a sweep runs, the plan also collects the
checked task results and the fit of each finished learning rate, so that the summary and the report that follow
read neither the task files nor the records a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chaosgd.experiments.config import Config
from chaosgd.experiments.executors import Execution
from chaosgd.experiments.problem import Task, check_point, pinned, tasks
from chaosgd.experiments.store import RUNS, RunDir
from chaosgd.precision import float64


@dataclass(frozen=True)
class Point:
    """One 1-D sweep of a plan: its ``value`` of ``axis`` (the second axis, ``training.axis``; both None without
    one) at place ``index`` of ``training.axis_values``, and its own configuration with the records it takes an
    epoch."""

    index: int | None
    axis: str | None
    value: float | None
    config: Config
    records_per_epoch: int

    @property
    def where(self) -> dict:
        """The second axis's value by name ({} in a 1-D sweep), as tables and summary lines show it."""
        return {} if self.axis is None else {self.axis: self.value}


@dataclass(frozen=True)
class Plan:
    """A pinned, checked configuration with its points, tasks, run folder and execution (see the module docstring).

    ``results`` (task name -> ``store.TaskResult``) and ``fits`` ((point, eta index) -> ``results.fit``'s
    triple) fill in as a sweep finds and finishes tasks; they are the plan's only changing parts."""

    config: Config
    points: tuple[Point, ...]
    tasks: tuple[Task, ...]
    run: RunDir
    execution: Execution  # (its local workers share this machine's memory: the sizes were checked for them)
    results: dict = field(default_factory=dict, compare=False, repr=False)
    fits: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def hash(self) -> str:
        """The pinned configuration's hash, which names the run in its folder and task files (computed once)."""
        return self.config.hash()

    def point(self, task: Task) -> Point:
        """The 1-D sweep a task belongs to."""
        return self.points[task.point or 0]

    def groups(self) -> dict[tuple[int, int], list[Task]]:
        """The tasks of each (point on the second axis, learning rate), in task order: what one fit reads."""
        return group_tasks(self.tasks)

    @property
    def complete(self) -> bool:
        """Every task's checked result is held."""
        return all(t.name in self.results for t in self.tasks)


def group_tasks(tasks) -> dict[tuple[int, int], list[Task]]:
    """Tasks by (point on the second axis, 0 without one; learning rate's index), each list in task order."""
    groups: dict[tuple[int, int], list[Task]] = {}
    for task in tasks:
        groups.setdefault((task.point or 0, task.eta_index), []).append(task)
    return groups


@float64
def make_plan(config: Config, run_dir: str | Path | RunDir | None = None, *, execution: Execution | None = None,
              count: int | None = None) -> Plan:
    """The plan of ``config`` in ``run_dir`` (default: ``runs/<name>``), run by ``execution`` (default:
    ``Execution()``: worker processes, one per core, each task's memory checked against its share), or the reason it
    cannot run (``ConfigError``, ``DataNotFoundError``, ``engine.BudgetError``), before a folder is made. The
    process is pinned to the execution's device first.

    ``count``: initial conditions a task trains (default: the configuration's block)."""
    execution = Execution() if execution is None else execution
    run = RunDir(RUNS / config.name if run_dir is None else run_dir)
    run.check_place()  # (again when it is prepared: the folder may change meanwhile)
    all_tasks = tuple(tasks(config))
    execution.pin_device()  # (before JAX computes anything: the data's checks and shapes below)
    config = pinned(config)
    axis = config.training.axis
    points = []
    for j, (value, point) in enumerate(config.points):
        # A sweep over batch sizes records once an epoch where a batch holds the whole set.
        r = check_point(point, strict=value is None or axis != "training.batch_size",
                        workers=execution.local_workers, count=count)
        points.append(Point(None if axis is None else j, axis, value, point, r))
    return Plan(config, tuple(points), all_tasks, run, execution)
