"""``chaosgd lyapunov``, ``sharpness`` and ``toymap``: one quantity, measured and drawn."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.experiments.report import FIGURE_2_ETA
from chaosgd.cli.options import (add_execution, add_experiment, add_out, experiment, one_point, out_folder,
                                 pyplot_free_plots, run_sweep)
from chaosgd.experiments.store import RUNS


def add_lyapunov(p: argparse.ArgumentParser) -> None:
    add_experiment(p)
    add_out(p, "runs/<name>-lyapunov-eta<eta>[-window<start>-<stop>]")
    add_execution(p)
    p.add_argument("--eta", type=float, default=FIGURE_2_ETA,
                   help="learning rate (sets training.etas; the paper's figure 2)")
    p.add_argument("--estimator", choices=["finite", "tangent"], default="finite",
                   help="finite: the paper's epsilon-ball; tangent: Benettin's QR method on the linearised map")
    p.add_argument("--k", type=int, default=1, help="tangent estimator: number of top exponents")
    p.add_argument("--window", type=int, nargs=2, metavar=("START", "STOP"),
                   help="fit over these epochs instead of the automatic [0, tau] (copies then run every epoch)")


def cmd_lyapunov(args) -> int:
    if getattr(args, "field:training.etas") is not None or any(s.strip().startswith("training.etas")
                                                                 for s in args.set):
        raise ValueError("lyapunov measures at one learning rate: give it with --eta, not training.etas")
    overrides = {"training.etas": (args.eta,)}
    if args.window:
        overrides["training.stop_copies"] = False  # a fixed window needs every epoch
    config = one_point(experiment(args, **overrides), "lyapunov")
    if args.window and not 0 <= args.window[0] <= args.window[1] - 2 <= config.training.epochs - 2:
        raise ValueError(f"--window START STOP: need 0 <= START, START + 2 <= STOP <= training.epochs = "
                         f"{config.training.epochs}; got {args.window[0]} {args.window[1]}")
    if args.k < 1:
        raise ValueError(f"--k must be >= 1; got {args.k}")
    if args.k != 1 and args.estimator != "tangent":
        raise ValueError(f"--k {args.k}: the number of top exponents is an option of --estimator tangent; the "
                         "finite estimator measures the largest one")
    window = f"-window{args.window[0]}-{args.window[1]}" if args.window else ""
    out = out_folder(args, RUNS / f"{config.name}-lyapunov-eta{args.eta:g}{window}")
    plots = pyplot_free_plots()
    if args.estimator == "tangent":
        summary = _tangent(config, args, out, plots)
    else:
        from chaosgd.experiments.results import fit, summarize

        records = summarize(run_sweep(args, config, out)).records(0)
        net = fit(records, config, window=args.window)[1]
        plots.save(plots.plot_distance(records.distance[0], net.local[0], eta=args.eta), out / "fig2_distance.png")
        plots.save(plots.plot_network_exponent(net, eta=args.eta), out / "fig3_local_exponents.png")
        summary = {"eta": args.eta, "estimator": "finite", "lambda_nmle": net.mean, "std": net.std,
                   "ci": [net.ci_low, net.ci_high], "confidence": net.confidence, "p_percent": net.p,
                   "n_fitted": net.n_fitted, "n_excluded": net.n_excluded,
                   "local": [{"exponent": f.exponent, "r2": f.r2, "stderr": f.stderr, "window": list(f.window),
                              "positive": f.positive, "copies": f.n_copies} for f in net.local]}
        print(f"eta = {args.eta:g}: lambda_NMLE = {net.mean:.4f} ± {net.std:.4f} (95% CI {net.ci_low:.4f} .. "
              f"{net.ci_high:.4f}), p = {net.p:.0f}% of {net.n_fitted} initial conditions"
              + (f", {net.n_excluded} left out (diverged)" if net.n_excluded else ""))
    atomic_write(out / "lyapunov.json", json.dumps(summary, indent=2, default=float))
    print(f"results and figures in {out}")
    return 0


def _tangent(config, args, out: Path, plots) -> dict:
    import jax
    from tqdm.auto import tqdm

    from chaosgd.ensemble import initial_conditions
    from chaosgd.experiments.executors import Execution
    from chaosgd.experiments.problem import build
    from chaosgd.tangent import tangent_exponents

    given = [f"--{name}" for name in ("workers", "scheduler") if getattr(args, name) is not None]
    if args.executor not in (None, "serial"):
        given.insert(0, f"--executor {args.executor}")
    if given:  # (they would be ignored)
        raise ValueError(f"{', '.join(given)}: the tangent estimator runs in this process, one network after "
                         "another; leave them out (they are for --estimator finite)")
    Execution("serial", device=args.device).pin_device()
    if not config.training.shared_noise:
        raise ValueError("the tangent estimator linearises the training map of one network (its own minibatch order "
                         "and dropout masks); training.shared_noise = false makes the epsilon-ball measure noise "
                         "between copies instead, which no tangent vector follows: use the finite estimator")
    problem = build(config)
    n, epochs = config.ensemble.initial, config.training.epochs
    centres = initial_conditions(problem.model, n, seed=config.ensemble.seed)
    finite_time, exponents, slopes = [], [], []
    for i in tqdm(range(n), desc="tangent", disable=args.quiet):
        centre = jax.tree_util.tree_map(lambda x: x[i], centres)
        result = tangent_exponents(problem.objective, centre, args.eta, problem.arrays, epochs=epochs, k=args.k,
                                   seed=i, rule=config.rule, initial_condition=i)
        start, stop = args.window if args.window else (0, epochs)
        finite_time.append(result.finite_time)
        exponents.append(result.over(start, stop))
        slopes.append(result.slope(start, stop))
    exponents = np.array(exponents)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "tangent.npz", lambda f: np.savez(f, finite_time=np.array(finite_time), exponents=exponents,
                                                          eta=args.eta))
    plots.save(plots.plot_finite_time_exponents(finite_time[0], eta=args.eta), out / "finite_time.png")
    slopes = np.array(slopes)
    summary = {"eta": args.eta, "estimator": "tangent", "k": args.k, "window": [start, stop],
               "mean": np.nanmean(exponents, axis=0).tolist(), "std": np.nanstd(exponents, axis=0).tolist(),
               "slope_mean": np.nanmean(slopes, axis=0).tolist()}
    print(f"eta = {args.eta:g}: tangent exponents over epochs {start}..{stop} (mean over {n} initial conditions): "
          + ", ".join(f"{m:.4f}" for m in summary["mean"]) + "; least-squares slope of the log growth (the "
          "epsilon-ball's estimator): " + ", ".join(f"{m:.4f}" for m in summary["slope_mean"]))
    return summary


SMALL_NETWORK = 10_000  # parameters up to which sharpness is tracked every epoch by default
SPARSE_EVERY = 5  # epochs between sharpness estimates of larger networks by default


def add_sharpness(p: argparse.ArgumentParser) -> None:
    from chaosgd.sharpness import METHODS

    add_experiment(p)
    add_out(p, "runs/<name>-sharpness")
    add_execution(p)
    p.add_argument("--every", type=int,
                   help="epochs between estimates (sets training.sharpness_every; default: every epoch for networks "
                        f"of up to {SMALL_NETWORK:,} parameters, whose period-2 orbits sparser sampling would alias, "
                        f"else {SPARSE_EVERY})")
    p.add_argument("--method", choices=list(METHODS), default="lanczos",
                   help="lanczos (largest algebraic) | power (the paper's) (sets training.sharpness_method)")
    p.add_argument("--iterations", type=int,
                   help="Hessian-vector products per estimate (sets training.sharpness_iterations; default 20, "
                        "with --top k > 1 max(6k, 30))")
    p.add_argument("--hessian-examples", type=int,
                   help="Hessian of the loss on this many fixed random training examples (sets "
                        "training.sharpness_examples; default: all)")
    p.add_argument("--top", type=int, default=1,
                   help="eigenvalues tracked, largest first (lanczos; sets training.sharpness_top)")
    p.add_argument("--density-epochs", type=int, nargs="+", default=[], metavar="EPOCH",
                   help="epochs at which the Hessian's spectral density is estimated as well (sets "
                        "training.density_epochs)")


def cmd_sharpness(args) -> int:
    """The top Hessian eigenvalue along training of initial condition 0 (of ensemble.seed) at each of the
    configuration's learning rates (figure 14): a sweep of that one network, as tasks in a run folder."""
    from chaosgd.experiments.results import summarize

    for option, value in (("--every", args.every), ("--iterations", args.iterations),
                          ("--hessian-examples", args.hessian_examples), ("--top", args.top)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be >= 1; got {value}")
    # One initial condition with one copy (the least an ensemble has) per learning rate: the sharpness is the work.
    if args.iterations is None:
        args.iterations = 20 if args.top == 1 else max(6 * args.top, 30)
    own = {"training.sharpness_method": args.method, "training.sharpness_iterations": args.iterations,
           "training.sharpness_examples": args.hessian_examples, "training.sharpness_top": args.top,
           "training.density_epochs": tuple(args.density_epochs), "ensemble.initial": 1, "ensemble.copies": 1,
           "block": 1}
    if args.every is None or args.top > 1:
        from chaosgd.experiments.executors import Execution
        from chaosgd.experiments.problem import build_model, dataset
        from chaosgd.models import count_parameters
        base = experiment(args, False, **own, **{"training.sharpness_every": args.every or 1})  # (a probe)
        # The probe builds the model: JAX is pinned to the device first (its first computation fixes the device).
        Execution(args.executor, args.workers, args.scheduler, device=args.device).pin_device()
        size = count_parameters(build_model(base.model, dataset(base.data)))
        if args.top > size:
            raise ValueError(f"--top {args.top}: the network has {size} parameters, so its Hessian has {size} "
                             f"eigenvalues; give --top in [1, {size}]")
        if args.every is None:
            args.every = 1 if size <= SMALL_NETWORK else SPARSE_EVERY
    config = one_point(experiment(args, **own, **{"training.sharpness_every": args.every}), "sharpness")
    out = out_folder(args, RUNS / f"{config.name}-sharpness")
    plots = pyplot_free_plots()
    results = summarize(run_sweep(args, config, out)).results.values()
    tracks = sorted((r.sharpness for r in results if r.sharpness is not None), key=lambda t: t.eta)
    # One set of arrays per learning rate: a diverged run stops early, so lengths differ.
    names = ("epoch", "value", "residual", "loss", "top", "top_residual", "density_epoch", "density_nodes",
             "density_weights")
    arrays = {f"{name}_eta_{t.eta:g}": getattr(t, name) for t in tracks for name in names
              if getattr(t, name) is not None}
    atomic_write(out / "sharpness.npz", lambda f: np.savez(f, eta=np.array([t.eta for t in tracks]), **arrays))
    plots.save(plots.plot_sharpness(tracks), out / "fig14_sharpness.png")
    for t in tracks:
        if t.density_epoch is not None:
            plots.save(plots.plot_spectral_density(t), out / f"density_eta_{t.eta:g}.png")
    for t in tracks:
        last = t.value[np.isfinite(t.value)]
        what = "sharpness" if t.kind == "hessian" else f"{t.kind} sharpness"
        limit = "2/eta" if t.kind == "hessian" and t.edge_of_stability == 2 / t.eta else "stability limit"
        print(f"eta = {t.eta:g}: {what} {last[0]:.4g} at t = {t.epoch[np.isfinite(t.value)][0]} -> {last[-1]:.4g} at "
              f"t = {t.epoch[np.isfinite(t.value)][-1]} ({limit} = {t.edge_of_stability:.4g})" if last.size
              else f"eta = {t.eta:g}: no finite estimate")
    print(f"results and figure 14 in {out}")
    return 0


def add_toymap(p: argparse.ArgumentParser) -> None:
    add_out(p, "runs/toymap")
    p.add_argument("--eta-min", type=float, default=0.01, help="smallest learning rate")
    p.add_argument("--eta-max", type=float, default=2.2, help="largest learning rate")
    p.add_argument("--n", type=int, default=2000, help="number of learning rates")
    p.add_argument("--transient", type=int, default=3000, help="steps discarded before recording")
    p.add_argument("--keep", type=int, default=200, help="orbit points kept per learning rate")
    p.add_argument("--steps", type=int, default=5000, help="steps averaged for the exponent")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial points")


def cmd_toymap(args) -> int:
    toymap(out_folder(args, RUNS / "toymap"), eta_min=args.eta_min, eta_max=args.eta_max, n=args.n,
           transient=args.transient, keep=args.keep, steps=args.steps, seed=args.seed)
    return 0


# Steps of the toy map one run may take (the paper's figures use 3,000 + 5,000): each is a pass over the learning
# rates in Python, so beyond this a run would not end in a working day.
_TOY_STEPS = 10_000_000


def toymap(out: Path, *, eta_min: float = 0.01, eta_max: float = 2.2, n: int = 2000, transient: int = 3000,
           keep: int = 200, steps: int = 5000, seed: int = 0) -> None:
    """The toy map's orbit diagram and exponent (figures 6 and 7) into ``out``; sizes that cannot run are refused
    before the folder is made."""
    from chaosgd.engine import default_memory_budget
    from chaosgd.toymap import FEIGENBAUM_DELTA, orbit_diagram, period_doubling, toy_lyapunov

    if not (np.isfinite(eta_min) and np.isfinite(eta_max) and 0 < eta_min < eta_max):
        raise ValueError(f"need 0 < --eta-min < --eta-max, both finite; got {eta_min}, {eta_max}")
    for option, value, least, most in (("--n", n, 2, None), ("--transient", transient, 1, _TOY_STEPS),
                                       ("--keep", keep, 1, _TOY_STEPS), ("--steps", steps, 1, _TOY_STEPS),
                                       ("--seed", seed, 0, 2**63 - 1)):
        if value < least or (most is not None and value > most):
            raise ValueError(f"{option} must be >= {least}" + (f" and <= {most:,}" if most else "")
                             + f"; got {value}")
    needed = 8 * n * (keep + 8)  # the orbit points, and a few arrays of one value per learning rate
    if needed > default_memory_budget():
        raise ValueError(f"--n {n} learning rates x --keep {keep} orbit points need about {needed / 2**30:.3g} GiB, "
                         f"more than the memory budget of {default_memory_budget() / 2**30:.3g} GiB; use fewer")
    plots = pyplot_free_plots()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    etas = np.linspace(eta_min, eta_max, n)
    start = time.perf_counter()
    diagram = orbit_diagram(etas, n_transient=transient, n_keep=keep, seed=seed)
    lam, escaped = toy_lyapunov(etas, n_transient=transient, n_steps=steps, seed=seed)
    seconds = time.perf_counter() - start
    atomic_write(out / "toymap.npz", lambda f: np.savez(f, eta=etas, orbit=diagram.points, lyapunov=lam,
                                                         escaped=escaped))
    plots.save(plots.plot_orbit_diagram(diagram), out / "fig6_orbit_diagram.png")
    plots.save(plots.plot_toy_lyapunov(etas, lam, escaped), out / "fig7_lyapunov.png")
    cascade = period_doubling()
    atomic_write(out / "cascade.json", json.dumps({
        "bifurcations": cascade.bifurcations.tolist(), "superstable": cascade.superstable.tolist(),
        "delta": cascade.delta.tolist(), "delta_superstable": cascade.delta_superstable.tolist(),
        "accumulation": cascade.accumulation, "feigenbaum_delta": FEIGENBAUM_DELTA}, indent=1))
    chaotic = etas[np.nan_to_num(lam, nan=-1) > 0]
    print(f"toy map over {n} learning rates in {seconds:.2f} s: "
          + (f"lambda > 0 first at eta = {chaotic.min():.4f}, " if chaotic.size else "no chaos, ")
          + (f"orbits escape from eta = {etas[escaped].min():.4f}" if escaped.any() else "no escape")
          + f"; results and figures in {out}")
    print("period doublings at eta = " + ", ".join(f"{b:.6f}" for b in cascade.bifurcations[:4]) + ", ...; "
          f"chaos from eta = {cascade.accumulation:.7f}; ratio of the last two intervals {cascade.delta[-1]:.5f} "
          f"(Feigenbaum's delta {FEIGENBAUM_DELTA:.5f})")
