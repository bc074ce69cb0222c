"""Bring stored results tables up to today's rule for learning rates whose exponents were all unresolved.

Since 0.6.0 a local exponent whose exponential phase fell between a few records (``LocalExponent.unresolved``)
enters neither lambda_NMLE nor p, which are NaN when none is resolved (``lyapunov.network_exponent``), with p's
interval 0-100 %. Tables written before that (``benchmarks/results/beyond/*-results.csv``) still show a lambda and
a p for such rows. Where a row's own counts say that no exponent entered (``n_unresolved + n_excluded ==
n_initial``), today's fit is decided by the row alone: lambda_nmle, lambda_std, lambda_ci_low, lambda_ci_high and
p_percent become NaN, p_ci_low 0 and p_ci_high 100; every other column (times to target, losses, divergence)
does not depend on the exponents and stays. Rows with some exponents resolved would need the task files (a
rerun: ``benchmarks/beyond_gd.sh``) and are refused.

Run:  .venv/bin/python benchmarks/refit_unresolved_rows.py benchmarks/results/beyond/*-results.csv
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

NAN_COLUMNS = ("lambda_nmle", "lambda_std", "lambda_ci_low", "lambda_ci_high", "p_percent")


def refit(path: Path) -> int:
    """Rewrite ``path`` in place; returns the rows changed."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    changed = 0
    for row in rows:
        unresolved, excluded, initial = (int(row[c]) for c in ("n_unresolved", "n_excluded", "n_initial"))
        if unresolved == 0:
            continue
        if unresolved + excluded != initial:
            raise SystemExit(f"{path}: eta = {row['eta']} has {initial - unresolved - excluded} resolved exponent(s) "
                             "beside unresolved ones: its lambda and p need the task files (rerun the sweep)")
        if all(math.isnan(float(row[c])) for c in NAN_COLUMNS):
            continue  # already today's
        row.update({c: "nan" for c in NAN_COLUMNS}, p_ci_low="0.0", p_ci_high="100.0")
        changed += 1
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+", type=Path)
    for path in parser.parse_args().tables:
        print(f"{path}: {refit(path)} row(s) brought to today's rule")


if __name__ == "__main__":
    main()
