"""``chaosgd uncertainty``: final-state sensitivity of training, the uncertainty exponent phi at each learning rate."""

from __future__ import annotations

import argparse
import json

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.cli.options import (add_execution, add_experiment, add_out, experiment, one_point, out_folder,
                                 pyplot_free_plots, run_sweep)
from chaosgd.experiments.store import RUNS
from chaosgd.uncertainty import (FINAL_EPOCHS, LOSS_BIN_DECADES, MIN_BIN_DECADES, MIN_DECADES, OUTCOMES,
                                 network_outcomes, uncertain_initial_conditions, uncertainty_from_initial_conditions)

RADII = (1e-11, 1e-9, 1e-7, 1e-5, 1e-3)  # 8 decades, inside float64's resolution and EPSILON_MAX for N(0, 1) weights


def add_uncertainty(p: argparse.ArgumentParser) -> None:
    add_experiment(p)
    add_out(p, "runs/<name>-uncertainty")
    add_execution(p)
    p.add_argument("--epsilons", type=float, nargs="+", default=list(RADII),
                   help="distances between the pairs' initial conditions: the radii of the epsilon-balls, spanning "
                        "at least 3 decades (sets training.axis = ensemble.epsilon and its values)")
    p.add_argument("--outcome", default="class",
                   help=f"what counts as a network's final outcome: 'class' (default: diverged / mean training "
                        f"accuracy over the last {FINAL_EPOCHS} records at least training.target / not) or 'loss' "
                        f"(diverged / the bin of log10 of the mean training loss over the last {FINAL_EPOCHS} "
                        "records), written to uncertainty.json / uncertainty-loss.json; a finished run folder is "
                        "analysed again without training")
    p.add_argument("--loss-bin", type=float, metavar="DECADES",
                   help=f"with --outcome loss: the bins' width in decades of the final loss (default "
                        f"{LOSS_BIN_DECADES:g}, a factor {10 ** LOSS_BIN_DECADES:.3g}; at least {MIN_BIN_DECADES:g})")


def cmd_uncertainty(args) -> int:
    """A 2-D sweep over eta and the ball's radius, every member trained to the last epoch; at each eta, the
    fraction of initial conditions whose final outcome changed within each radius (some copy ended differently:
    diverged / mean training accuracy over the last records at least training.target / not; or with --outcome loss,
    the bin of the final training loss on a log scale), and phi fitted to it with a bootstrap interval over the
    initial conditions."""
    from chaosgd.experiments.results import summarize

    if args.outcome not in OUTCOMES:
        raise ValueError(f"--outcome: one of {', '.join(OUTCOMES)}; got {args.outcome!r}")
    if args.loss_bin is not None and args.outcome != "loss":
        raise ValueError(f"--loss-bin {args.loss_bin:g}: the width of --outcome loss's bins; --outcome "
                         f"{args.outcome} has none")
    width = LOSS_BIN_DECADES if args.loss_bin is None else args.loss_bin
    if not (np.isfinite(width) and width >= MIN_BIN_DECADES):
        raise ValueError(f"--loss-bin: a width in decades, finite and >= {MIN_BIN_DECADES:g}; got {args.loss_bin}")

    radii = [float(e) for e in args.epsilons]
    if len(radii) < 3 or len(set(radii)) != len(radii) or not all(np.isfinite(radii)) or min(radii) <= 0 \
            or np.log10(max(radii) / min(radii)) < MIN_DECADES:
        raise ValueError(f"--epsilons: give 3 or more distinct radii > 0 spanning at least {MIN_DECADES:g} decades; "
                         f"got {args.epsilons}")
    radii = sorted(radii)
    for key in ("training.axis", "training.axis_values"):  # (its second axis is the radius)
        given = getattr(args, f"field:{key}", None) is not None
        if given or any(item.split("=")[0].strip() == key for item in args.set):
            raise ValueError(f"{key}: chaosgd uncertainty sets training.axis and training.axis_values itself (the "
                             "radius, from --epsilons); leave them out")
    one_point(experiment(args), "uncertainty")  # a 2-D experiment's own second axis would be lost
    config = experiment(args, **{"training.axis": "ensemble.epsilon", "training.axis_values": tuple(radii),
                                 "training.stop_copies": False, "training.stop_references": False})
    if config.training.epochs * config.training.records_per_epoch < FINAL_EPOCHS:
        raise ValueError(f"training.epochs = {config.training.epochs}: the final outcome is the mean training "
                         f"{'loss' if args.outcome == 'loss' else 'accuracy'} over the last {FINAL_EPOCHS} records; "
                         "train for at least that many")
    out = out_folder(args, RUNS / f"{config.name}-uncertainty")
    summary = summarize(run_sweep(args, config, out))
    if summary.n_pending:
        raise RuntimeError(f"{summary.n_pending} tasks of {out} are not finished or not trusted "
                           f"({'; '.join(summary.problems.values()) or 'run it again to finish them'})")
    target = config.training.target
    judged = ({"target": target} if args.outcome == "class" else {"bin_decades": width}) | {"outcome": args.outcome}
    described = OUTCOMES[args.outcome].format(last=FINAL_EPOCHS, target=target, width=width)
    if args.outcome != "class":
        print(f"outcome: {described}")
    fits, rows = {}, []
    for k, eta in enumerate(config.training.etas):
        records = [summary.records(k, j) for j in range(len(radii))]
        if any(not np.array_equal(r.initial_condition, records[0].initial_condition) for r in records):
            raise RuntimeError(f"eta = {eta:g}: the radii's records hold different initial conditions")
        uncertain = np.stack([uncertain_initial_conditions(network_outcomes(r, **judged)) for r in records], axis=1)
        fit = uncertainty_from_initial_conditions(radii, uncertain, seed=config.ensemble.seed)
        fits[eta] = fit
        rows.append({"eta": eta, "phi": _number(fit.phi), "phi_ci": [_number(fit.phi_low), _number(fit.phi_high)],
                     "prefactor": _number(fit.prefactor), "reason": fit.reason, "epsilon": fit.epsilon.tolist(),
                     "uncertain": fit.differ.tolist(), "initial_conditions": int(fit.pairs[0]),
                     "fraction": fit.fraction.tolist(),
                     "fraction_ci": [fit.fraction_low.tolist(), fit.fraction_high.tolist()],
                     "decades": fit.decades, "power_law_p": _number(fit.power_law_p)})
        shown = (f"phi = {fit.phi:.3f} [{fit.phi_low:.3f}, {fit.phi_high:.3f}]" if np.isfinite(fit.phi)
                 else "phi not resolved")
        print(f"eta = {eta:g}: {shown}; initial conditions whose outcome changed within each radius "
              + ", ".join(f"{d}/{n}" for d, n in zip(fit.differ, fit.pairs))
              + (f" ({fit.reason})" if fit.reason else ""))
    info = {"outcome": described,
            "outcome_name": args.outcome, **({"loss_bin_decades": width} if args.outcome == "loss" else {}),
            "uncertain": "an initial condition whose outcome some perturbed copy at that radius does not share",
            "interval": "percentile bootstrap over the initial conditions (they serve every radius)",
            "confidence": next(iter(fits.values())).confidence, "copies": config.ensemble.copies,
            "learning_rates": rows}
    name = "uncertainty" if args.outcome == "class" else f"uncertainty-{args.outcome}"  # one analysis each
    atomic_write(out / f"{name}.json", json.dumps(info, indent=1))
    plots = pyplot_free_plots()
    plots.save(plots.plot_uncertainty(fits)[0], out / f"{name}.png")
    print(f"results and figure in {out}")
    return 0


def _number(value: float) -> float | None:
    """JSON has no NaN or infinity: null (an open interval's end, an unresolved phi)."""
    return float(value) if np.isfinite(value) else None
