"""Per-learning-rate results of a sweep, from its stored records: the table behind figures 4 and 5."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from chaosgd.config import Config
from chaosgd.lyapunov import network_exponent
from chaosgd.sweep import load_records, pending, tasks
from chaosgd.training_time import time_to_accuracy

COLUMNS = ("eta", "lambda_nmle", "lambda_std", "lambda_ci_low", "lambda_ci_high", "p_percent", "n_initial",
           "n_excluded", "tau_mean", "tau_stderr", "tau_censored", "final_loss_mean", "final_test_accuracy_mean",
           "diverged_fraction", "network_epochs", "naive_network_epochs")


def summarize(run_dir: str | Path) -> list[dict]:
    """One row per learning rate whose tasks are all finished (see ``COLUMNS``).

    lambda: the network MLE and the spread of local exponents over S, with a 95 % bootstrap CI of the mean; p: the
    percentage of S with a positive local exponent; tau: epochs to the target test accuracy, mean and standard error
    over the initial conditions that reached it, and how many did not (censored); final loss and test accuracy of
    the reference networks that did not diverge (nor stop early: ``training.stop_references``); the fraction of
    reference networks that diverged.
    """
    run_dir = Path(run_dir)
    config = Config.load(run_dir / "config.toml")
    unfinished = {t.eta_index for t in pending(config, run_dir)}
    rows = []
    for k, eta in enumerate(config.training.etas):
        if k not in unfinished:
            rows.append(summarize_records(load_records(run_dir, k), eta, target=config.training.target,
                                          r2_min=config.analysis.r2_min, lambda_min=config.analysis.lambda_min,
                                          plateau=config.analysis.plateau))
    return rows


def summarize_records(rec, eta: float, *, target: float, r2_min: float = 0.9, lambda_min: float = 0.05,
                      plateau: int | None = 40) -> dict:
    """The row of ``COLUMNS`` for the records of one learning rate (every group of ``rec``)."""
    net = network_exponent(rec.distance, r2_min=r2_min, lambda_min=lambda_min, plateau=plateau,
                           stopped_at=rec.copies_stopped_at)
    tt = time_to_accuracy(rec.test_accuracy, target)
    final_loss = rec.loss[:, 0, -1]
    final_acc = rec.test_accuracy[:, -1]
    return {
        "eta": float(eta), "lambda_nmle": net.mean, "lambda_std": net.std, "lambda_ci_low": net.ci_low,
        "lambda_ci_high": net.ci_high, "p_percent": net.p, "n_initial": rec.loss.shape[0],
        "n_excluded": net.n_excluded, "tau_mean": tt.mean(), "tau_stderr": tt.standard_error(),
        "tau_censored": tt.n_censored,
        "final_loss_mean": float(np.nanmean(final_loss)) if np.isfinite(final_loss).any() else float("nan"),
        "final_test_accuracy_mean": float(np.nanmean(final_acc)) if np.isfinite(final_acc).any() else float("nan"),
        "diverged_fraction": float((rec.diverged_at[:, 0] >= 0).mean()),
        "network_epochs": rec.network_epochs, "naive_network_epochs": rec.naive_network_epochs,
    }


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """The table as CSV (``pandas.read_csv`` reads it in one call); written atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def write_parquet(rows: list[dict], path: str | Path) -> Path | None:
    """The table as Parquet (typed columns; ``pandas.read_parquet`` reads it), written atomically; None when
    pyarrow is not installed (``pip install 'chaosgd[analysis]'``)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    path = Path(path)
    integer = {"n_initial", "n_excluded", "tau_censored", "network_epochs", "naive_network_epochs"}
    table = pa.table({c: pa.array([r[c] for r in rows], type=pa.int64() if c in integer else pa.float64())
                      for c in COLUMNS})
    tmp = path.with_name(path.name + ".partial")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def loss_curves(run_dir: str | Path, etas=(0.01, 7.5, 20.0), initial_condition: int = 0) -> dict[float, np.ndarray]:
    """Training loss of one reference network at the grid's learning rates nearest to ``etas`` (figure 1)."""
    run_dir = Path(run_dir)
    config = Config.load(run_dir / "config.toml")
    grid = np.array(config.training.etas)
    done = {t.eta_index for t in tasks(config)} - {t.eta_index for t in pending(config, run_dir)}
    curves = {}
    for wanted in etas:
        k = int(np.argmin(np.abs(np.log(grid) - np.log(wanted))))
        if k in done and float(grid[k]) not in curves:
            rec = load_records(run_dir, k)
            row = np.flatnonzero(rec.initial_condition == initial_condition)
            curves[float(grid[k])] = rec.loss[row[0] if row.size else 0, 0]
    return curves
