"""Bring stored results tables up to today's rule for learning rates whose exponents were all unresolved.

Since 0.6.0 a local exponent whose exponential phase fell between a few records (``LocalExponent.unresolved``)
enters neither lambda_NMLE nor p, which are NaN when none is resolved (``lyapunov.network_exponent``), with p's
interval 0-100 %. Tables written before that (``benchmarks/results/beyond/*-results.csv``) still show a lambda and
a p for such rows. Where a row's own counts say that no exponent entered (``n_unresolved + n_excluded ==
n_initial``), today's fit is decided by the row alone: lambda_nmle, lambda_std, lambda_ci_low, lambda_ci_high and
p_percent become NaN, p_ci_low 0 and p_ci_high 100; every other column (times to target, losses, divergence)
does not depend on the exponents and stays. A one-off migration of the committed tables: a fresh run
(``benchmarks/beyond_gd.sh``) writes today's fit itself, and rows with some exponents resolved are left as they
are (a table written before 0.6.0 would need a rerun for them; the ones committed have none).

Run:  .venv/bin/python benchmarks/refit_unresolved_rows.py benchmarks/results/beyond/*-results.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

from chaosgd.atomic import atomic_write

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
            print(f"{path}: eta = {row['eta']} left as it is: {initial - unresolved - excluded} exponent(s) resolved "
                  "beside the unresolved ones (the row alone cannot decide today's fit)")
            continue
        if all(math.isnan(float(row[c])) for c in NAN_COLUMNS):
            continue  # already today's
        row.update({c: "nan" for c in NAN_COLUMNS}, p_ci_low="0.0", p_ci_high="100.0")
        changed += 1
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue())
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+", type=Path)
    for path in parser.parse_args().tables:
        print(f"{path}: {refit(path)} row(s) brought to today's rule")


if __name__ == "__main__":
    main()
