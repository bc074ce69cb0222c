"""``chaosgd run``, ``chaosgd lyapunov`` and ``chaosgd sharpness``: one problem, trained and measured."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from chaosgd.cli.common import (DEFAULT_TARGET, add_data_and_model, add_problem, build_ensemble,
                                data_and_model, pyplot_free_plots)
from chaosgd.config import PAPER_ETAS


def add_run(p: argparse.ArgumentParser) -> None:
    add_problem(p, default_out="runs/latest")
    p.add_argument("--etas", type=float, nargs="+", default=list(PAPER_ETAS), help="learning rates (paper's grid)")
    p.add_argument("--target", type=float, help="target test accuracy for the training time "
                                                "(default 0.9; 0.8 CNN; 0.3 CIFAR-10, as in the paper)")
    add_keep_copies(p)


def add_keep_copies(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-copies", action="store_true",
                   help="run the perturbed copies every epoch (default: stop them once their exponent's fit is "
                        "settled, which changes no result)")


def stop_copies_after(args) -> int | None:
    from chaosgd.lyapunov import PLATEAU
    return None if args.keep_copies or getattr(args, "window", None) else PLATEAU


def cmd_run(args) -> int:
    from chaosgd import classification, run
    from chaosgd.ensemble import over_learning_rates
    from chaosgd.results import summarize_records, write_csv

    target = args.target if args.target is not None else DEFAULT_TARGET.get(
        args.dataset, DEFAULT_TARGET.get(args.model, 0.9))
    if not 0 < target <= 1:
        raise ValueError(f"--target must be a fraction in (0, 1]; got {target}")
    dataset, model, ball = build_ensemble(args, len(args.etas))
    params, eta, ic = over_learning_rates(ball, args.etas)
    start = time.perf_counter()
    records = run(classification(model, l2=args.l2), params, eta, dataset.arrays(args.dtype), epochs=args.epochs,
                  initial_condition=ic, groups_per_chunk=args.groups_per_chunk, progress=not args.quiet,
                  stop_copies_after=stop_copies_after(args))
    seconds = time.perf_counter() - start

    rows = [summarize_records(records.select(records.eta[:, 0] == value), value, target=target)
            for value in args.etas]
    out = Path(args.out)
    records.save(out / "records.npz")
    write_csv(rows, out / "results.csv")
    options = {k: v for k, v in vars(args).items() if k != "handler"}
    (out / "summary.json").write_text(json.dumps({"command": options, "seconds": seconds, "target": target,
                                                  "by_eta": rows}, indent=2))
    print(f"{'eta':>8} {'lambda_NMLE':>12} {'p':>5} {'loss(T)':>9} {'test acc(T)':>11} {'diverged':>8}  "
          f"epochs to {target:.0%} (censored)")
    for r in rows:
        print(f"{r['eta']:>8g} {r['lambda_nmle']:>12.4f} {r['p_percent']:>4.0f}% {r['final_loss_mean']:>9.4f} "
              f"{r['final_test_accuracy_mean']:>11.3f} {r['diverged_fraction']:>8.0%}  "
              f"{r['tau_mean']:.1f} ({r['tau_censored']}/{r['n_initial']})")
    print(f"{records.network_epochs:,} network-epochs (of {records.naive_network_epochs:,} for all networks every "
          f"epoch) in {seconds:.1f} s; records in {out / 'records.npz'}")
    return 0


def add_lyapunov(p: argparse.ArgumentParser) -> None:
    add_problem(p, default_out="runs/lyapunov")
    p.add_argument("--eta", type=float, default=10.0, help="learning rate (default 10, the paper's figure 2)")
    p.add_argument("--estimator", default="finite", help="finite (the paper's epsilon-ball, default) | tangent")
    p.add_argument("--k", type=int, default=1, help="tangent estimator: number of top exponents (default 1)")
    p.add_argument("--window", type=int, nargs=2, metavar=("START", "STOP"),
                   help="fit over these epochs instead of the automatic [0, tau]")
    p.add_argument("--r2-min", type=float, default=0.9, help="R^2 above which a local exponent can count positive")
    p.add_argument("--lambda-min", type=float, default=0.05, help="slope above which it counts positive")
    add_keep_copies(p)


def cmd_lyapunov(args) -> int:
    import jax

    from chaosgd import classification, run
    from chaosgd.lyapunov import network_exponent
    from chaosgd.tangent import tangent_exponents

    if args.estimator not in ("finite", "tangent"):
        raise ValueError(f"unknown estimator {args.estimator!r}; choose one of ['finite', 'tangent']")
    plots = pyplot_free_plots()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset, model, ball = build_ensemble(args, 1)
    objective = classification(model, l2=args.l2)
    data = dataset.arrays(args.dtype)
    if args.estimator == "tangent":
        from tqdm.auto import tqdm
        finite_time, exponents = [], []
        for i in tqdm(range(args.initial), desc="tangent", disable=args.quiet):
            centre = jax.tree_util.tree_map(lambda x: x[i, 0], ball)
            result = tangent_exponents(objective, centre, args.eta, data, epochs=args.epochs, k=args.k, seed=i)
            start, stop = args.window if args.window else (0, args.epochs)
            finite_time.append(result.finite_time)
            exponents.append(result.over(start, stop))
        exponents = np.array(exponents)
        np.savez(out / "tangent.npz", finite_time=np.array(finite_time), exponents=exponents, eta=args.eta)
        plots.save(plots.plot_finite_time_exponents(finite_time[0], eta=args.eta), out / "finite_time.png")
        summary = {"eta": args.eta, "estimator": "tangent", "k": args.k,
                   "mean": np.nanmean(exponents, axis=0).tolist(), "std": np.nanstd(exponents, axis=0).tolist()}
        print(f"eta = {args.eta:g}: tangent exponents (mean over {args.initial} initial conditions): "
              + ", ".join(f"{m:.4f}" for m in summary["mean"]))
    else:
        records = run(objective, ball, args.eta, data, epochs=args.epochs, groups_per_chunk=args.groups_per_chunk,
                      progress=not args.quiet, stop_copies_after=stop_copies_after(args))
        records.save(out / "records.npz")
        net = network_exponent(records.distance, window=args.window, r2_min=args.r2_min, lambda_min=args.lambda_min,
                               stopped_at=records.copies_stopped_at)
        plots.save(plots.plot_distance(records.distance[0], net.local[0], eta=args.eta), out / "fig2_distance.png")
        plots.save(plots.plot_network_exponent(net, eta=args.eta), out / "fig3_local_exponents.png")
        summary = {"eta": args.eta, "estimator": "finite", "lambda_nmle": net.mean, "std": net.std,
                   "ci": [net.ci_low, net.ci_high], "confidence": net.confidence, "p_percent": net.p,
                   "n_fitted": net.n_fitted, "n_excluded": net.n_excluded,
                   "local": [{"exponent": f.exponent, "r2": f.r2, "stderr": f.stderr, "window": [f.start, f.stop],
                              "positive": f.positive, "copies": f.n_copies} for f in net.local]}
        print(f"eta = {args.eta:g}: lambda_NMLE = {net.mean:.4f} ± {net.std:.4f} (95% CI {net.ci_low:.4f} .. "
              f"{net.ci_high:.4f}), p = {net.p:.0f}% of {net.n_fitted} initial conditions"
              + (f", {net.n_excluded} left out (diverged)" if net.n_excluded else ""))
    (out / "lyapunov.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"results and figures in {out}")
    return 0


def add_sharpness(p: argparse.ArgumentParser) -> None:
    add_data_and_model(p, default_out="runs/sharpness")
    p.add_argument("--etas", type=float, nargs="+", default=[0.01, 7.5, 20.0],
                   help="learning rates (default 0.01 7.5 20, those of the paper's figure 1)")
    p.add_argument("--every", type=int, default=5, help="epochs between estimates (default 5)")
    p.add_argument("--method", default="lanczos", help="lanczos (largest algebraic, default) | power (the paper's)")
    p.add_argument("--iterations", type=int, default=20, help="Hessian-vector products per estimate (default 20)")
    p.add_argument("--hessian-examples", type=int,
                   help="Hessian of the loss on this many fixed random training examples (default: all)")
    p.add_argument("--initial-condition", type=int, default=0, help="which initial condition of --seed to follow")


def cmd_sharpness(args) -> int:
    from tqdm.auto import tqdm

    from chaosgd import classification
    from chaosgd.ensemble import initial_conditions
    from chaosgd.sharpness import METHODS, track_sharpness

    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}; choose one of {list(METHODS)}")
    plots = pyplot_free_plots()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset, model = data_and_model(args)
    objective = classification(model, l2=args.l2)
    import jax
    params = jax.tree_util.tree_map(lambda x: x[0], initial_conditions(model, 1, seed=args.seed,
                                                                      first=args.initial_condition))
    tracks = []
    for eta in tqdm(args.etas, desc="sharpness"):
        tracks.append(track_sharpness(objective, params, eta, dataset.arrays(args.dtype), epochs=args.epochs,
                                      every=args.every, method=args.method, iterations=args.iterations,
                                      hessian_examples=args.hessian_examples, seed=args.seed))
    # One set of arrays per learning rate: a diverged run stops early, so lengths differ.
    np.savez(out / "sharpness.npz", eta=np.array(args.etas),
             **{f"{name}_eta_{t.eta:g}": getattr(t, name) for t in tracks for name in ("epoch", "value", "loss")})
    plots.save(plots.plot_sharpness(tracks), out / "fig14_sharpness.png")
    for t in tracks:
        last = t.value[np.isfinite(t.value)]
        print(f"eta = {t.eta:g}: sharpness {last[0]:.4g} at t = 0 -> {last[-1]:.4g} at t = {t.epoch[len(last) - 1]}"
              f" (2/eta = {t.edge_of_stability:.4g})" if last.size else f"eta = {t.eta:g}: diverged at t = 0")
    print(f"results and figure 14 in {out}")
    return 0
