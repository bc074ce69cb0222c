"""Per-learning-rate results of a sweep, from its checked task files: the table behind figures 4 and 5.

``fit`` is the one place where records become lambda_NMLE, p and the time to target, with the configuration's
analysis settings; the summary lines, the table, the report and the sweet spot all use it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.defaults import CONFIDENCE
from chaosgd.experiments.config import Config, ConfigError
from chaosgd.experiments.problem import tasks
from chaosgd.experiments.store import RunDir, TaskResult
from chaosgd.lyapunov import network_exponent
from chaosgd.precision import float64
from chaosgd.records import concatenate
from chaosgd.training_time import time_to_accuracy

COLUMNS = ("eta", "lambda_nmle", "lambda_std", "lambda_ci_low", "lambda_ci_high", "p_percent", "p_ci_low",
           "p_ci_high", "n_initial", "n_excluded", "n_unresolved", "reached_percent", "reached_ci_low",
           "reached_ci_high",
           "tau_median", "tau_median_ci_low", "tau_median_ci_high", "tau_rmst", "tau_rmst_ci_low", "tau_rmst_ci_high",
           "tau_horizon", "tau_mean_reached", "tau_stderr_reached", "tau_censored", "stuck_at_chance",
           "reached_then_stuck", "final_loss_mean", "final_test_accuracy_mean", "diverged_fraction",
           "network_epochs", "naive_network_epochs", "steps_per_epoch", "tau_median_steps", "records_per_epoch")
INTEGER_COLUMNS = frozenset({"n_initial", "n_excluded", "n_unresolved", "tau_horizon", "tau_censored",
                             "stuck_at_chance", "reached_then_stuck", "network_epochs", "naive_network_epochs",
                             "steps_per_epoch", "records_per_epoch"})


def fit(records, config: Config, *, window: tuple[int, int] | None = None,
        n_classes: int | None = None) -> tuple[dict, object, object]:
    """The row of ``COLUMNS`` for the records of one learning rate, the network exponent and the training time.

    lambda: the network MLE and the spread of local exponents over S, with a 95 % BCa bootstrap CI of the mean; p:
    the percentage of S with a positive local exponent (``config.analysis``) and its Wilson interval; tau: epochs to
    ``training.target`` test accuracy (held ``training.target_hold`` epochs) as censored survival data: the
    percentage that reached it (Wilson), the Kaplan-Meier median and the restricted mean up to ``tau_horizon`` with
    95 % intervals (a median that is not reached is ``inf``), and the paper's <tau> over those that reached it with
    the number censored; networks stuck at chance (final test accuracy <= 1/classes + ``analysis.chance_margin``),
    and how many of them had reached the target before; final loss and test accuracy of the reference networks that
    did not diverge (nor stop early: ``training.stop_references``); the fraction of reference networks that
    diverged; ``n_unresolved``: local exponents whose exponential phase was too short for the records
    (``LocalExponent.unresolved``: left out of lambda and p, which are NaN when none is resolved). ``window``: fit
    every local exponent over these epochs instead of the automatic [0, tau]. Times are in epochs, one pass over
    the training set, so the same number of per-example gradients whatever the batch size; ``tau_median_steps`` is
    the median in optimiser steps (``steps_per_epoch`` an epoch), and ``records_per_epoch`` says how finely the
    records resolve them.
    ``n_classes``: of the data (default: that of ``config.data``), for chance accuracy.
    """
    from chaosgd.experiments.problem import n_classes as classes_of

    classes = classes_of(config.data) if n_classes is None else n_classes
    if 1 / classes + config.analysis.chance_margin >= 1:
        raise ValueError(f"analysis.chance_margin = {config.analysis.chance_margin:g}: with {classes} classes, "
                         f"chance plus the margin is not below 1 (every network would count as stuck at chance); "
                         f"use less than {1 - 1 / classes:.3g}")
    r = records.per_epoch
    net = network_exponent(records.distance, window=window, stopped_at=records.copies_stopped_at,
                           confidence=CONFIDENCE, records_per_epoch=r, steps_per_record=records.steps_per_record,
                           **config.analysis.fit)
    tt = time_to_accuracy(records.test_accuracy, config.training.target, hold=config.training.target_hold,
                          records_per_epoch=r)
    surv = tt.survival(CONFIDENCE)
    final_loss = records.loss[:, 0, -1]
    final_acc = records.test_accuracy[:, -1]
    stuck = final_acc <= 1 / classes + config.analysis.chance_margin
    p_low, p_high = net.p_interval()
    row = {
        "eta": float(records.eta[0, 0]), "lambda_nmle": net.mean, "lambda_std": net.std, "lambda_ci_low": net.ci_low,
        "lambda_ci_high": net.ci_high, "p_percent": net.p, "p_ci_low": p_low, "p_ci_high": p_high,
        "n_initial": records.loss.shape[0], "n_excluded": net.n_excluded, "n_unresolved": net.n_unresolved,
        "reached_percent": 100 * surv.n_reached / surv.n, "reached_ci_low": 100 * surv.reached_low,
        "reached_ci_high": 100 * surv.reached_high, "tau_median": surv.median, "tau_median_ci_low": surv.median_low,
        "tau_median_ci_high": surv.median_high, "tau_rmst": surv.rmst, "tau_rmst_ci_low": surv.rmst_low,
        "tau_rmst_ci_high": surv.rmst_high, "tau_horizon": surv.horizon, "tau_mean_reached": tt.mean(),
        "tau_stderr_reached": tt.standard_error(), "tau_censored": tt.n_censored,
        "stuck_at_chance": int(stuck.sum()), "reached_then_stuck": int((stuck & ~tt.censored).sum()),
        "final_loss_mean": float(np.nanmean(final_loss)) if np.isfinite(final_loss).any() else float("nan"),
        "final_test_accuracy_mean": float(np.nanmean(final_acc)) if np.isfinite(final_acc).any() else float("nan"),
        "diverged_fraction": float((records.diverged_at[:, 0] >= 0).mean()),
        "network_epochs": records.network_epochs, "naive_network_epochs": records.naive_network_epochs,
        "steps_per_epoch": int(records.steps_per_epoch[0]),
        # (in whole steps: a passage lies on a record, every steps / r steps)
        "tau_median_steps": (round(surv.median * r) * (int(records.steps_per_epoch[0]) // r)
                             if np.isfinite(surv.median) else surv.median),
        "records_per_epoch": r,
    }
    return row, net, tt


def summary_line(fitted: tuple, where: dict | None = None) -> str:
    """One line for a finished learning rate from its ``fit``: lambda_NMLE, p, the time to target, divergence.
    ``where``: the value of the second axis of a 2-D sweep, by name."""
    row, net, tt = fitted
    diverged = round(row["diverged_fraction"] * row["n_initial"])
    stuck = row["stuck_at_chance"]
    point = "".join(f"{name} = {value:g}, " for name, value in (where or {}).items())
    exponent = ("lambda_NMLE and p not measured" if not net.n_fitted else
                f"lambda_NMLE = {net.mean:.3f}" + (f" ± {net.std:.3f}" if np.isfinite(net.std) else "")
                + f", p = {net.p:.0f}%")
    return (f"{point}eta = {row['eta']:g}: {exponent}, "
            f"{tt.describe(CONFIDENCE)}" + (f", {diverged} diverged" if diverged else "")
            + (f", {stuck} stuck at chance accuracy" if stuck else "")
            + (f"; {row['n_unresolved']} exponential phase(s) too short for the records, left out of lambda and p"
               if row["n_unresolved"] else ""))


# Settings that only read the records: a finished run can be re-analysed with other values of these without
# computing anything again (``summarize(..., changes=...)``, ``chaosgd report RUN --set ... --out DIR``). Not
# analysis.plateau: it also decided when the copies stopped.
REANALYSIS_FIELDS = ("training.target", "training.target_hold", "analysis.r2_min", "analysis.lambda_min",
                     "analysis.chance_margin")


def check_reanalysis_fields(keys) -> None:
    """Refuse any field but ``REANALYSIS_FIELDS``: the others shaped the records themselves."""
    other = sorted(set(keys) - set(REANALYSIS_FIELDS))
    if other:
        raise ConfigError(f"{', '.join(other)}: a finished run can be re-analysed only with other values of "
                          f"{', '.join(REANALYSIS_FIELDS)}; the others shaped its records (run a sweep with them)")


def reanalysis(config: Config, changes: dict) -> Config:
    """``config`` with ``changes`` to ``REANALYSIS_FIELDS`` (checked like any configuration)."""
    check_reanalysis_fields(changes)
    t = config.training
    if t.stop_references and (changes.get("training.target", t.target) != t.target
                              or changes.get("training.target_hold", 1) != 1):
        raise ConfigError(f"this run stopped its references once they reached {t.target:g} "
                          "(training.stop_references): their records end there, so neither another "
                          "training.target nor a training.target_hold can be read from them")
    return config.with_values(**changes)


@dataclass(frozen=True)
class Summary:
    """What a run folder holds: its configuration (as analysed: with ``changes``, the re-analysis settings, applied),
    one row per finished learning rate (per value of the second axis and learning rate in a 2-D sweep: the row
    then holds the axis's value under its name, e.g. ``training.batch_size``), the checked task results by name,
    and the task files that could not be trusted (name -> why). ``n_classes``: of the data, as run.json recorded
    it (so that a run on an npz file can be reported without the file); None: from the configuration."""

    config: Config
    rows: list[dict]
    results: dict[str, TaskResult]
    problems: dict[str, str]
    n_tasks: int
    changes: dict = field(default_factory=dict)
    n_classes: int | None = None
    fits: dict = field(default_factory=dict, repr=False)  # (point, eta index) -> fit's (row, exponent, time)

    @property
    def n_pending(self) -> int:
        return self.n_tasks - len(self.results)

    def records(self, eta_index: int | None = None, point: int | None = None):
        """The records of one finished learning rate (None: of every finished task, in task order), at one point
        of the second axis in a 2-D sweep (its index; None: every point)."""
        return concatenate([self.results[t.name].records for t in tasks(self.config)
                            if (eta_index is None or t.eta_index == eta_index)
                            and (point is None or t.point == point) and t.name in self.results])


@float64
def summarize(run_dir, *, changes: dict | None = None) -> Summary:
    """Check every task file of a run folder and fit every learning rate whose tasks are all finished; files that
    cannot be trusted are named in ``Summary.problems`` (their learning rates count as unfinished), never fitted.
    ``changes``: re-analyse with other values of ``REANALYSIS_FIELDS`` (dotted names), the records as they are.

    ``run_dir``: a run folder, or the ``plan.Plan`` a sweep just ran, whose checked results and fits are used as
    they are (its task files are not read again)."""
    from chaosgd.experiments.plan import Plan, group_tasks

    plan = run_dir if isinstance(run_dir, Plan) else None
    store = plan.run if plan is not None else RunDir(run_dir)
    config = plan.config if plan is not None else store.config()
    classes = store.info().get("n_classes")
    classes = classes if isinstance(classes, int) and not isinstance(classes, bool) and classes >= 2 else None
    from chaosgd.datasets import CLASSES
    known = CLASSES.get(config.data.name)
    if classes is not None and known is not None and classes != known:
        raise ConfigError(f"{store.info_path}: n_classes is {classes}, but {config.data.name} has {known} classes: "
                          "the file was edited or damaged; delete it, and the next sweep of this run's "
                          "configuration writes it again")
    every = plan.tasks if plan is not None else tasks(config)
    if plan is not None and plan.complete:  # (checked as the sweep found or made them; a copy, not the plan's own)
        results, problems = dict(plan.results), {}
    else:
        results, problems = store.scan(config.hash(), every)  # checked against the configuration that made them
    known_fits = plan.fits if plan is not None and not changes else {}
    analysed = reanalysis(config, changes) if changes else config
    rows, fits = [], {}
    axis = config.training.axis
    groups = group_tasks(every)
    for j, (value, point) in enumerate(analysed.points):
        for k, eta in enumerate(config.training.etas):
            mine = groups.get((j, k), [])
            if all(t.name in results for t in mine):
                fits[j, k] = known_fits.get((j, k)) or fit(concatenate([results[t.name].records for t in mine]),
                                                           point, n_classes=classes)
                where = {} if axis is None else {axis: value}
                rows.append({**where, **fits[j, k][0], "eta": eta})  # the grid's eta (float32 records round it)
    # A grid may be written in any order; tables and figures go up in eta (within each value of the second axis).
    rows.sort(key=lambda row: (row.get(axis, 0), row["eta"]))
    return Summary(analysed, rows, results, problems, len(every), dict(changes or {}), classes, fits)


def columns(rows: list[dict]) -> tuple[str, ...]:
    """``COLUMNS``, after the second axis's column in a 2-D sweep."""
    return tuple(c for c in (rows[0] if rows else {}) if c not in COLUMNS) + COLUMNS


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """The table as CSV (``pandas.read_csv`` reads it in one call); written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(path, text.getvalue())


def write_parquet(rows: list[dict], path: str | Path) -> Path | None:
    """The table as Parquet (typed columns; ``pandas.read_parquet`` reads it), written atomically; None when
    pyarrow is not installed (``pip install 'chaosgd[analysis]'``)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    table = pa.table({c: pa.array([r[c] for r in rows], type=pa.int64() if c in INTEGER_COLUMNS else pa.float64())
                      for c in columns(rows)})
    return atomic_write(path, lambda f: pq.write_table(table, f))


def loss_curves(summary: Summary, etas=(0.01, 7.5, 20.0),
                initial_condition: int = 0) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Training loss of one reference network at the finished learning rates nearest to ``etas`` (figure 1), as
    (epoch of each record, loss)."""
    grid = np.array(summary.config.training.etas)
    finished = {row["eta"] for row in summary.rows}
    curves = {}
    for wanted in etas:
        k = int(np.argmin(np.abs(np.log(grid) - np.log(wanted))))
        if float(grid[k]) in finished and float(grid[k]) not in curves:
            rec = summary.records(k)
            row = np.flatnonzero(rec.initial_condition == initial_condition)
            curves[float(grid[k])] = (rec.time, rec.loss[row[0] if row.size else 0, 0])
    return curves
