"""``chaosgd uncertainty``: final-state sensitivity of training, the uncertainty exponent phi at each learning rate."""

from __future__ import annotations

import argparse
import json

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.cli.options import (RUNS, add_execution, add_experiment, add_out, experiment, out_folder,
                                 pyplot_free_plots, run_sweep)

RADII = (1e-11, 1e-9, 1e-7, 1e-5, 1e-3)  # 8 decades, inside float64's resolution and EPSILON_MAX for N(0, 1) weights


def add_uncertainty(p: argparse.ArgumentParser) -> None:
    add_experiment(p)
    add_out(p, "runs/<name>-uncertainty")
    add_execution(p)
    p.add_argument("--epsilons", type=float, nargs="+", default=list(RADII),
                   help="distances between the pairs' initial conditions: the radii of the epsilon-balls, spanning "
                        "at least 3 decades (sets training.axis = ensemble.epsilon and its values)")


def cmd_uncertainty(args) -> int:
    """A 2-D sweep over eta and the ball's radius, every member trained to the last epoch; at each eta, the
    fraction of (reference, copy) pairs whose final outcome differs (diverged / mean training accuracy over the
    last records at least training.target / not), and phi fitted to it."""
    from chaosgd.experiments.results import summarize
    from chaosgd.uncertainty import (FINAL_EPOCHS, MIN_DECADES, network_outcomes, pairs_differing,
                                     uncertainty_exponent)

    radii = sorted(set(args.epsilons))
    if len(radii) < 3 or radii[0] <= 0 or np.log10(radii[-1] / radii[0]) < MIN_DECADES:
        raise ValueError(f"--epsilons: give 3 or more distinct radii > 0 spanning at least {MIN_DECADES:g} decades; "
                         f"got {args.epsilons}")
    config = experiment(args, **{"training.axis": "ensemble.epsilon", "training.axis_values": tuple(radii),
                                 "training.stop_copies": False, "training.stop_references": False})
    out = out_folder(args, RUNS / f"{config.name}-uncertainty")
    summary = summarize(run_sweep(args, config, out))
    if summary.n_pending:
        raise RuntimeError(f"{summary.n_pending} tasks of {out} are not finished or not trusted "
                           f"({'; '.join(summary.problems.values()) or 'run it again to finish them'})")
    target = config.training.target
    fits, rows = {}, []
    for k, eta in enumerate(config.training.etas):
        counts = [pairs_differing(network_outcomes(summary.records(k, j), target)) for j in range(len(radii))]
        fit = uncertainty_exponent(radii, [c[0] for c in counts], [c[1] for c in counts])
        fits[eta] = fit
        rows.append({"eta": eta, "phi": fit.phi, "phi_ci": [fit.phi_low, fit.phi_high], "reason": fit.reason,
                     "epsilon": fit.epsilon.tolist(), "differ": fit.differ.tolist(), "pairs": fit.pairs.tolist(),
                     "fraction_ci": [fit.fraction_low.tolist(), fit.fraction_high.tolist()],
                     "power_law_p": fit.power_law_p})
        shown = (f"phi = {fit.phi:.3f} [{fit.phi_low:.3f}, {fit.phi_high:.3f}]" if np.isfinite(fit.phi)
                 else "phi not resolved")
        print(f"eta = {eta:g}: {shown}; differing pairs " + ", ".join(
            f"{d}/{n}" for d, n in zip(fit.differ, fit.pairs)) + (f" ({fit.reason})" if fit.reason else ""))
    info = {"outcome": f"diverged | mean training accuracy over the last {FINAL_EPOCHS} records >= {target:g} | "
                       "below it",
            "confidence": next(iter(fits.values())).confidence, "learning_rates": rows}
    atomic_write(out / "uncertainty.json", json.dumps(info, indent=1))
    plots = pyplot_free_plots()
    plots.save(plots.plot_uncertainty(fits)[0], out / "uncertainty.png")
    print(f"results and figure in {out}")
    return 0
