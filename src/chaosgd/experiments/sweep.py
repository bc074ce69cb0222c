"""Learning-rate sweeps: a configuration's plan (``plan.make_plan``: its tasks and run folder) runs on an executor
into the run folder (``store.RunDir``).

Running a sweep again checks every task file and runs only what is missing or cannot be trusted, so an interrupted
sweep (Ctrl-C, SIGTERM, ``kill -9``) resumes without losing or redoing work, with the results of an uninterrupted
run. Several sweeps of one configuration may share a run folder at once (a SLURM array, two terminals): each task is
claimed before it runs, so it is computed once, and every job finishes when all tasks are done.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from functools import lru_cache
from pathlib import Path

from chaosgd.atomic import atomic_write
from chaosgd.experiments.config import Config
from chaosgd.experiments.executors import Execution, check_stop
from chaosgd.experiments.plan import Plan, make_plan
from chaosgd.experiments.problem import Task, run_task, task_sharpness
from chaosgd.experiments.store import RunDir, TaskFileError
from chaosgd.precision import float64


class Interrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C or SIGTERM; its message says what was kept and how to resume."""


@float64
def sweep(config: Config | Plan, run_dir: str | Path | None = None, *, executor: str | None = None,
          workers: int | None = None, scheduler: str | None = None, retries: int | None = None,
          claim_timeout: float | None = None, wait_poll: float | None = None, device: str | None = None,
          progress: bool = True, log=print) -> RunDir:
    """Run every unfinished task of ``config`` into ``run_dir`` and return the run folder.

    Args:
        config: a configuration, or its plan (``plan.make_plan``; it then names the run folder and how its tasks
            run, and collects the results and fits for ``results.summarize``).
        run_dir: the run folder (default: ``runs/<name>``); not with a plan.
        executor, workers, scheduler, retries, claim_timeout, wait_poll, device: how the tasks run
            (``executors.Execution``, whose defaults they take): ``"serial"`` (this process), ``"processes"`` (local
            workers, one single-threaded process per core; default, except on a GPU) or ``"dask"`` (``scheduler``:
            a running scheduler's address; None starts a LocalCluster); ``workers`` processes (default: one per
            core); ``retries``: times a task whose worker died is run again; ``claim_timeout``: seconds after which
            a claim that was not refreshed is taken over (its job died); ``wait_poll``: seconds between looks at
            tasks that other jobs are computing; ``device``: ``"cpu"`` or ``"gpu"`` (default: JAX's choice). With a
            plan, which carries its own, only values it already has.
        progress: a progress bar over network-epochs, with an ETA.
        log: where lines go (one per finished learning rate, with lambda_NMLE, p and the time to target).

    Raises ``Interrupted`` on Ctrl-C or SIGTERM (finished tasks are kept) and ``executors.TaskFailed`` when a
    task raises (at once; finished tasks are kept).
    """
    given = {name: value for name, value in dict(executor=executor, workers=workers, scheduler=scheduler,
                                                  retries=retries, claim_timeout=claim_timeout, wait_poll=wait_poll,
                                                  device=device).items() if value is not None}
    if isinstance(config, Plan):
        if run_dir is not None:
            raise ValueError(f"a plan names its run folder ({config.run}); run_dir {run_dir} is one too many")
        other = {k: v for k, v in given.items() if getattr(config.execution, k) != v}
        if other:  # (its sizes were checked for its own execution)
            raise ValueError(f"a plan carries how its tasks run ({config.execution}); "
                             f"{', '.join(f'{k}={v!r}' for k, v in other.items())} would change it: make the plan "
                             "with make_plan(..., execution=Execution(...))")
        return run_plan(config, progress=progress, log=log)
    return run_plan(make_plan(config, run_dir, execution=Execution(**given)), progress=progress, log=log)


@float64
def run_plan(plan: Plan, *, progress: bool = True, log=print) -> RunDir:
    """``sweep`` of a plan (``plan.make_plan``): its unfinished tasks run into its folder as its execution says,
    and its results and fits fill in."""
    from chaosgd.experiments.results import fit, summary_line
    from chaosgd.records import concatenate

    config, every = plan.config, plan.tasks
    store = plan.run.prepare(config, log)
    by_name = {t.name: t for t in every}
    done = plan.results  # (the plan holds them for the summary that follows; what the folder holds now counts)
    done.clear()
    plan.fits.clear()
    try:
        found, problems = store.scan(plan.hash, every)
    except KeyboardInterrupt:  # (checking a large run's files takes a while)
        raise Interrupted(f"interrupted while checking the task files of {store}; nothing was lost: run the same "
                          "command again to resume") from None
    done.update(found)
    for name, why in problems.items():
        log(f"recomputing {why}")
    log(f"{config.name}: {len(done)} of {len(every)} tasks already done in {store}; running the rest with the "
        f"{plan.execution.executor} executor")
    groups = plan.groups()
    bar = _bar(plan, [t for t in every if t.name not in done], progress)
    say = bar.write if bar is not None and log is print else log
    summarized: set[tuple[int, int]] = set()  # those whose line was said
    computed = []

    def summarize_finished(keys=None):
        for key in sorted(set(groups if keys is None else keys) - summarized):
            mine = groups[key]
            if all(t.name in done for t in mine):
                summarized.add(key)
                point = plan.point(mine[0])
                plan.fits[key] = fit(concatenate([done[t.name].records for t in mine]), point.config)
                say(summary_line(plan.fits[key], point.where))

    def take_result(task):  # its file, checked; by this job or another
        done[task.name] = store.load_task(task, plan.hash)
        if bar is not None:
            bar.finish(task.name)

    summarize_finished()  # what earlier calls finished
    toml = config.to_toml()  # (what the workers read the configuration from)
    waiting_said = False
    with store.claims(timeout=plan.execution.claim_timeout) as claims:
        def tasks_to_claim():
            """A source for one map: the tasks in order, each looked at once (a later map looks again at those that
            other jobs held)."""
            ahead = iter(every)

            def source():
                for task in ahead:
                    if task.name in done or task.name in claims.held or claims.taken_by_others(task.name):
                        continue
                    if not claims.claim(task.name):
                        continue
                    try:  # another job may have finished it since we looked
                        take_result(task)
                        claims.release(task.name)
                        continue
                    except TaskFileError:
                        return task.name, (toml, task, str(store.root))
                return None
            return source

        def on_result(name, _):
            computed.append(name)
            claims.release(name)
            take_result(by_name[name])
            summarize_finished([(by_name[name].point or 0, by_name[name].eta_index)])

        try:
            # No executor (no Dask cluster, no workers) when everything is done already.
            pool = plan.execution.open() if len(done) < len(every) else None
            with pool or contextlib.nullcontext():
                while len(done) < len(every):
                    pool.map(execute, tasks_to_claim(), on_result, bar.advance if bar is not None else None)
                    for task in every:  # finished by other jobs meanwhile
                        if task.name not in done and not claims.taken_by_others(task.name):
                            try:
                                take_result(task)
                            except TaskFileError:
                                pass
                    summarize_finished()
                    if len(done) < len(every):
                        if not waiting_said:
                            log(f"waiting for {len(every) - len(done)} task(s) that other jobs are computing")
                            waiting_said = True
                        time.sleep(plan.execution.wait_poll)
                        check_stop()
        except KeyboardInterrupt:
            if bar is not None:
                bar.close()
            raise Interrupted(f"interrupted: {len(done)} of {len(every)} tasks are finished and kept in {store}; "
                              "run the same command again to resume") from None
    if bar is not None:
        bar.close()
    log(f"{config.name}: all {len(every)} tasks are done in {store}; this call computed {len(computed)}")
    return store


@lru_cache(maxsize=4)
def _config(toml: str) -> Config:
    return Config.from_toml(toml)


@float64
def execute(config_toml: str, task: Task, run_dir: str, progress=None) -> str:
    """Run one task and write its file (what workers execute); returns the task's name. If the task raises, its
    traceback is written to ``tasks/<task>.error.txt`` and the error carries that path as a note."""
    store = RunDir(run_dir)
    try:
        config = _config(config_toml)
        start = time.perf_counter()
        records = run_task(config, task, progress=progress or False)
        if progress:
            progress(0)  # where a stopped executor's report raises: a task that was abandoned ends here
        track = task_sharpness(config, task)
        store.write_task(config, task, records, seconds=time.perf_counter() - start, sharpness=track)
    except Exception as error:
        if type(error).__name__ != "_Abandoned":
            try:
                error.add_note(f"traceback in {atomic_write(store.error_path(task), traceback.format_exc())}")
            except OSError:  # the folder cannot be written (full, read-only): the error itself says enough
                pass
        raise
    store.error_path(task).unlink(missing_ok=True)  # an earlier failure of this task is history now
    return task.name


class _Bar:
    """A progress bar over the naive network-epochs of the pending tasks: within a task it moves as the task
    reports (the engine's per-record progress: a task of r records an epoch reports r per network-epoch), and a
    finished task counts in full."""

    def __init__(self, plan: Plan, todo: list[Task]):
        from chaosgd.progress import ProgressBar

        config = plan.config
        self.per_epoch = {t.name: plan.point(t).records_per_epoch for t in todo}
        self.epochs = {t.name: t.count * (1 + config.ensemble.copies) * config.training.epochs for t in todo}
        self.seen = dict.fromkeys(self.epochs, 0)  # network-records each task reported
        self.bar = ProgressBar(sum(self.epochs.values()), config.name)

    def advance(self, name: str, n: int) -> None:
        # In whole network-epochs of each task (tasks may record a different number of times an epoch).
        size = self.epochs[name] * self.per_epoch[name]
        before = self.seen[name] // self.per_epoch[name]
        self.seen[name] = min(size, self.seen[name] + n)
        self.bar.update(self.seen[name] // self.per_epoch[name] - before)

    def finish(self, name: str) -> None:
        self.advance(name, self.epochs[name] * self.per_epoch[name])

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


def _bar(plan, todo, enabled):
    return _Bar(plan, todo) if enabled and todo else None
