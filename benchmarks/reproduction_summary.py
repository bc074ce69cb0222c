"""The per-experiment summary table of docs/reproduction.md, from the results tables that reproduce_cpu.sh keeps.

For each ``benchmarks/results/reproduction/<run>-results.csv``: where p first reaches 50 % and 95 % (with its Wilson
interval), the learning rate of fastest training by restricted mean time to target (with its interval, the
percentage that reached the target, and the learning rates whose intervals overlap it), and where most networks end
stuck at chance accuracy, and where most exponents were not resolved by the per-epoch records (``n_unresolved``;
tables made before 0.4.0 have no such column). p's thresholds count only learning rates where most were resolved.
A 2-D sweep's table (its first column the second axis) gets one line per value of it.

Run:  .venv/bin/python benchmarks/reproduction_summary.py [FOLDER]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def _lines(path: Path) -> list[tuple[str, list[dict]]]:
    """(name, rows) of each line of the table: the run's, or one per value of a 2-D sweep's second axis."""
    with open(path) as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    name = path.name.removesuffix("-results.csv")
    axis = next(iter(rows[0])) if rows else "eta"
    if axis == "eta":
        return [(name, rows)]
    values = sorted({r[axis] for r in rows})
    return [(f"{name}, {axis.split('.')[-1]} = {v:g}", [r for r in rows if r[axis] == v]) for v in values]


def _first(rows, p):
    hit = [r for r in rows if r["p_percent"] >= p and r["diverged_fraction"] <= 0.5
           and 2 * r.get("n_unresolved", 0) <= r["n_initial"]]  # where most exponents were measured
    if not hit:
        return "never"
    r = hit[0]
    return f"{r['eta']:g} ({r['p_percent']:.0f} % [{r['p_ci_low']:.0f}, {r['p_ci_high']:.0f}])"


def _fastest(rows) -> str:
    calm = [r for r in rows if r["reached_percent"] > 0 and r["diverged_fraction"] <= 0.5]
    if not calm:
        return "none reached the target"
    best = min(calm, key=lambda r: r["tau_rmst"])
    close = [r["eta"] for r in calm if r is not best and r["tau_rmst_ci_low"] <= best["tau_rmst_ci_high"]]
    return (f"{best['eta']:g}: {best['tau_rmst']:.0f} [{best['tau_rmst_ci_low']:.0f}, {best['tau_rmst_ci_high']:.0f}]"
            f" of {best['tau_horizon']:.0f}, {best['reached_percent']:.0f} % reached, "
            + ("p not resolved" if 2 * best.get("n_unresolved", 0) > best["n_initial"] else
               f"p = {best['p_percent']:.0f} %")
            + (f"; overlaps {', '.join(f'{e:g}' for e in close)}" if close else ""))


def main(folder: str = "benchmarks/results/reproduction") -> None:
    print("| run | p ≥ 50 % first at η | p ≥ 95 % first at η | fastest η: restricted mean epochs [95 % CI] | "
          "most stuck at chance at η | exponents not resolved at η |")
    print("|---|---|---|---|---|---|")
    for path in sorted(Path(folder).glob("*-results.csv")):
        for name, rows in _lines(path):
            stuck = [f"{r['eta']:g}" for r in rows if 2 * r["stuck_at_chance"] > r["n_initial"]]
            unresolved = [f"{r['eta']:g}" for r in rows if 2 * r.get("n_unresolved", 0) > r["n_initial"]]
            print(f"| {name} | {_first(rows, 50)} | {_first(rows, 95)} | {_fastest(rows)} | "
                  f"{', '.join(stuck) or 'none'} | {', '.join(unresolved) or 'none'} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
