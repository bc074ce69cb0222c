"""Final-state sensitivity and the toy map's cascade: the numbers docs/final_state.md quotes.

1. Feigenbaum's delta from the toy map's period doublings (``toymap.period_doubling``, 11 levels).
2. The uncertainty exponent on systems of known phi: the digit map's Cantor basin boundaries (``uncertainty.
   digit_basins``; phi = 1 - ln ceil(b/2) / ln b), 10^6 pairs at radii b^-5 .. b^-12, and a smooth boundary (phi = 1).
3. ``chaosgd uncertainty iris`` across the onset of chaos (eta 0.01 .. 3, 100 initial conditions x 5 copies, radii
   1e-11 .. 1e-3, 201 epochs), with p and lambda_NMLE of the same runs (at epsilon = 1e-7, the radius nearest the
   paper's 1e-8).

Run:  .venv/bin/python benchmarks/final_state.py   (about 5 minutes on 2 cores)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from chaosgd.toymap import FEIGENBAUM_DELTA, period_doubling
from chaosgd.uncertainty import digit_basins, fraction_differing, uncertainty_exponent

RESULTS = Path(__file__).parent / "results" / "final_state"


def cascade() -> dict:
    start = time.perf_counter()
    c = period_doubling(11)
    return {"bifurcations": c.bifurcations.tolist(), "superstable": c.superstable.tolist(), "delta": c.delta.tolist(),
            "delta_superstable": c.delta_superstable.tolist(), "accumulation": c.accumulation,
            "relative_error_last_delta": c.delta[-1] / FEIGENBAUM_DELTA - 1, "seconds": time.perf_counter() - start}


def known_exponents(pairs: int = 1_000_000) -> list[dict]:
    rows = []
    for base in (4, 5, 6):
        radii = float(base) ** -np.arange(5, 13)
        differ, n = fraction_differing(lambda x, b=base: digit_basins(x, b), radii, pairs=pairs, seed=1)
        fit = uncertainty_exponent(radii, differ, n)
        rows.append({"system": f"digit map, base {base}", "phi_exact": 1 - np.log(np.ceil(base / 2)) / np.log(base),
                     "phi": fit.phi, "phi_ci": [fit.phi_low, fit.phi_high], "reason": fit.reason,
                     "radii": radii.tolist(), "differ": fit.differ.tolist()})
    radii = np.logspace(-6, -1, 6)
    differ, n = fraction_differing(lambda x: (x > 0.3).astype(int), radii, pairs=pairs, seed=2)
    fit = uncertainty_exponent(radii, differ, n)
    rows.append({"system": "one boundary point", "phi_exact": 1.0, "phi": fit.phi, "phi_ci": [fit.phi_low,
                 fit.phi_high], "reason": fit.reason, "radii": radii.tolist(), "differ": fit.differ.tolist()})
    return rows


def networks(initial: int = 100) -> dict:
    from chaosgd.cli import main
    from chaosgd.experiments.results import summarize

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "iris-uncertainty"
        start = time.perf_counter()
        code = main(["uncertainty", "iris", "--training.etas", "0.01,0.03,0.1,0.3,1,3", "--ensemble.initial",
                     str(initial), "--quiet", "--out", str(out)])
        if code:
            raise SystemExit(f"chaosgd uncertainty failed ({code})")
        seconds = time.perf_counter() - start
        saved = json.loads((out / "uncertainty.json").read_text())
        rows = summarize(out).rows
        for row in saved["learning_rates"]:
            same = next(r for r in rows if r["eta"] == row["eta"] and r["ensemble.epsilon"] == 1e-7)
            row.update({key: same[key] for key in ("p_percent", "lambda_nmle", "reached_percent", "n_initial",
                                                   "tau_rmst", "tau_rmst_ci_low", "tau_rmst_ci_high",
                                                   "stuck_at_chance")})
        shutil.copy(out / "uncertainty.png", RESULTS / "iris-uncertainty.png")
    return {"seconds": seconds, **saved}


def main():
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"cascade": cascade(), "known_exponents": known_exponents(), "iris": networks()}
    (RESULTS / "final_state.json").write_text(json.dumps(result, indent=1))
    c = result["cascade"]
    print(f"delta from the last two intervals {c['delta'][-1]:.7f} ({c['relative_error_last_delta']:.1e} relative); "
          f"chaos from eta = {c['accumulation']:.8f}")
    for row in result["known_exponents"]:
        print(f"{row['system']}: phi = {row['phi']:.4f} [{row['phi_ci'][0]:.4f}, {row['phi_ci'][1]:.4f}], exact "
              f"{row['phi_exact']:.4f} {row['reason']}")
    for row in result["iris"]["learning_rates"]:
        print(f"iris eta = {row['eta']:g}: p = {row['p_percent']:.0f} %, lambda = {row['lambda_nmle']:.3f}, "
              f"restricted mean {row['tau_rmst']:.1f}, stuck {row['stuck_at_chance']}, phi = {row['phi']} "
              f"{row['phi_ci']}, uncertain {row['uncertain']} of {row['initial_conditions']} {row['reason']}")


if __name__ == "__main__":
    main()
