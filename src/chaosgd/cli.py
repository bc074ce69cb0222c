"""The ``chaosgd`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

# The paper's learning-rate grid (DESIGN.md).
PAPER_ETAS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20)
DEFAULT_HIDDEN = {"iris": (10,), "cifar10": (256,)}  # others: (64,), the paper's MNIST MLP
DEFAULT_TARGET = {"cifar10": 0.3, "cnn": 0.8}  # by data set, then by model; 0.9 otherwise (the paper's choices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaosgd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, add, handler, help_text in (
            ("run", _add_run, _run, "train an ensemble over learning rates and record it"),
            ("lyapunov", _add_lyapunov, _lyapunov, "local and network Lyapunov exponents at one learning rate "
                                                   "(figures 2 and 3)"),
            ("sharpness", _add_sharpness, _sharpness, "top Hessian eigenvalue along training against 2/eta "
                                                      "(figure 14)"),
            ("toymap", _add_toymap, _toymap, "the toy double-well map: orbit diagram and exponent (figures 6, 7)"),
            ("sweep", _add_sweep, _sweep, "run (or resume) a preset's or a TOML file's learning-rate sweep"),
            ("report", _add_report, _report, "write the HTML report and results.csv of a run folder"),
            ("reproduce", _add_sweep, _reproduce, "sweep a preset, add the toy map, and write the report")):
        sub = commands.add_parser(name, help=help_text)
        add(sub)
        sub.set_defaults(handler=handler)
    data = commands.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download a data set's standard files (needs internet)")
    fetch.add_argument("name", choices=["mnist", "fashion-mnist", "cifar10"])
    fetch.add_argument("--data-dir", help="folder that will hold <name>/ (default: $CHAOSGD_DATA or ~/.chaosgd/data)")
    fetch.set_defaults(handler=_fetch)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"chaosgd: error: {error}", file=sys.stderr)
        return 2


def _fetch(args) -> int:
    from chaosgd.datasets.fetch import fetch

    print(fetch(args.name, path=args.data_dir))
    return 0


def _add_run(p: argparse.ArgumentParser) -> None:
    _add_problem(p, default_out="runs/latest")
    p.add_argument("--etas", type=float, nargs="+", default=list(PAPER_ETAS), help="learning rates (paper's grid)")
    p.add_argument("--target", type=float, help="target test accuracy for the training time "
                                                "(default 0.9; 0.8 CNN; 0.3 CIFAR-10, as in the paper)")


def _add_problem(p: argparse.ArgumentParser, *, default_out: str) -> None:
    """Options that define the data, the model and the ensemble (shared by run and lyapunov)."""
    _add_data_and_model(p, default_out=default_out)
    p.add_argument("--initial", type=int, default=50, help="initial conditions |S| (default 50)")
    p.add_argument("--copies", type=int, default=5, help="perturbed copies M per initial condition (default 5)")
    p.add_argument("--epsilon", type=float, default=1e-8, help="radius of the epsilon-ball (default 1e-8)")
    p.add_argument("--perturb", default="all", help="all | weights: parameters the ball perturbs (default all)")
    p.add_argument("--groups-per-chunk", type=int, help="groups trained at once (default: fit half the memory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_data_and_model(p: argparse.ArgumentParser, *, default_out: str) -> None:
    p.add_argument("--dataset", default="iris", help="iris | mnist | fashion-mnist | cifar10 | blobs (default iris)")
    p.add_argument("--data-dir", help="folder holding <dataset>/ (default: $CHAOSGD_DATA or ~/.chaosgd/data)")
    p.add_argument("--standardize", action="store_true", help="standardise features (the paper does not)")
    p.add_argument("--model", default="mlp", help="mlp | cnn (default mlp)")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden widths of the MLP (default: 10 Iris, 64 MNIST)")
    p.add_argument("--activation", default="tanh", help="tanh | sigmoid | relu (default tanh)")
    p.add_argument("--sigma", type=float, help="weights ~ N(0, sigma^2) (default 1 MLP, 0.01 CNN)")
    p.add_argument("--epochs", type=int, default=201, help="gradient-descent steps (default 201)")
    p.add_argument("--l2", type=float, default=0.0, help="L2 coefficient lambda in L + lambda/2 |W|^2 (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of initial conditions, perturbations, Iris split")
    p.add_argument("--dtype", default="float64", help="float64 (default) | float32")
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")


def _data_and_model(args):
    from chaosgd.datasets import load
    from chaosgd.models import for_dataset

    dataset = load(args.dataset, path=args.data_dir, standardize=args.standardize, seed=args.seed)
    hidden = tuple(args.hidden) if args.hidden else DEFAULT_HIDDEN.get(args.dataset, (64,))
    model = for_dataset(args.model, dataset.example_shape, dataset.n_classes, hidden=hidden,
                        activation=args.activation, sigma=args.sigma, dtype=args.dtype)
    return dataset, model


def _build(args, n_etas: int):
    """Data set, model and epsilon-ball ensemble from the shared options; prints what will run."""
    from chaosgd.ensemble import epsilon_ball, initial_conditions
    from chaosgd.models import count_parameters

    dataset, model = _data_and_model(args)
    centres = initial_conditions(model, args.initial, seed=args.seed)
    ball = epsilon_ball(centres, args.copies, epsilon=args.epsilon, perturb=args.perturb, seed=args.seed)
    print(f"{dataset.name}: {len(dataset.y_train)} train / {len(dataset.y_test)} test; {model} with "
          f"{count_parameters(model):,} parameters; {n_etas} learning rate(s) x {args.initial} initial "
          f"conditions x (1 + {args.copies}) copies, {args.epochs} epochs")
    return dataset, model, ball


def _run(args) -> int:
    from chaosgd import classification, run
    from chaosgd.ensemble import over_learning_rates
    from chaosgd.training_time import time_to_accuracy

    target = args.target if args.target is not None else DEFAULT_TARGET.get(
        args.dataset, DEFAULT_TARGET.get(args.model, 0.9))
    if not 0 < target <= 1:
        raise ValueError(f"--target must be a fraction in (0, 1]; got {target}")
    dataset, model, ball = _build(args, len(args.etas))
    params, eta, ic = over_learning_rates(ball, args.etas)
    start = time.perf_counter()
    records = run(classification(model, l2=args.l2), params, eta, dataset.arrays(args.dtype), epochs=args.epochs,
                  initial_condition=ic, groups_per_chunk=args.groups_per_chunk, progress=not args.quiet)
    seconds = time.perf_counter() - start

    rows = []
    for value in args.etas:
        sel = records.select(records.eta[:, 0] == value)
        tt = time_to_accuracy(sel.test_accuracy, target)
        log_d = np.log(sel.distance)
        rows.append({
            "eta": value,
            "diverged": int((sel.diverged_at[:, 0] >= 0).sum()),
            "final_loss": float(np.nanmean(sel.loss[:, 0, -1])) if np.isfinite(sel.loss[:, 0, -1]).any() else None,
            "final_test_accuracy": _nanmean(sel.test_accuracy[:, -1]),
            "mean_ln_d_start": _nanmean(log_d[..., 0]),
            "mean_ln_d_end": _nanmean(log_d[..., -1]),
            "time_to_target_mean": None if tt.n_censored == tt.epoch.size else tt.mean(),
            "time_to_target_censored": tt.n_censored,
            "time_to_target": tt.describe(),
        })
    out = Path(args.out)
    records.save(out / "records.npz")
    options = {k: v for k, v in vars(args).items() if k != "handler"}
    (out / "summary.json").write_text(json.dumps({"command": options, "seconds": seconds, "target": target,
                                                  "by_eta": rows}, indent=2))
    print(f"{'eta':>8} {'diverged':>8} {'loss(T)':>9} {'test acc(T)':>11} {'<ln d(0)>':>9} {'<ln d(T)>':>9}  "
          f"training time")
    for r in rows:
        print(f"{r['eta']:>8g} {r['diverged']:>8d} {_fmt(r['final_loss'], '.4f'):>9} "
              f"{_fmt(r['final_test_accuracy'], '.3f'):>11} {_fmt(r['mean_ln_d_start'], '.2f'):>9} "
              f"{_fmt(r['mean_ln_d_end'], '.2f'):>9}  {r['time_to_target']}")
    print(f"{records.eta.size * records.epochs:,} network-epochs in {seconds:.1f} s; records in {out / 'records.npz'}")
    return 0


def _add_lyapunov(p: argparse.ArgumentParser) -> None:
    _add_problem(p, default_out="runs/lyapunov")
    p.add_argument("--eta", type=float, default=10.0, help="learning rate (default 10, the paper's figure 2)")
    p.add_argument("--estimator", default="finite", help="finite (the paper's epsilon-ball, default) | tangent")
    p.add_argument("--k", type=int, default=1, help="tangent estimator: number of top exponents (default 1)")
    p.add_argument("--window", type=int, nargs=2, metavar=("START", "STOP"),
                   help="fit over these epochs instead of the automatic [0, tau]")
    p.add_argument("--r2-min", type=float, default=0.9, help="R^2 above which a local exponent can count positive")
    p.add_argument("--lambda-min", type=float, default=0.05, help="slope above which it counts positive")


def _lyapunov(args) -> int:
    import jax

    from chaosgd import classification, run
    from chaosgd.lyapunov import network_exponent
    from chaosgd.tangent import tangent_exponents

    if args.estimator not in ("finite", "tangent"):
        raise ValueError(f"unknown estimator {args.estimator!r}; choose one of ['finite', 'tangent']")
    plots = _pyplot_free_plots()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset, model, ball = _build(args, 1)
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
                      progress=not args.quiet)
        records.save(out / "records.npz")
        net = network_exponent(records.distance, window=args.window, r2_min=args.r2_min, lambda_min=args.lambda_min)
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


def _add_sharpness(p: argparse.ArgumentParser) -> None:
    _add_data_and_model(p, default_out="runs/sharpness")
    p.add_argument("--etas", type=float, nargs="+", default=[0.01, 7.5, 20.0],
                   help="learning rates (default 0.01 7.5 20, those of the paper's figure 1)")
    p.add_argument("--every", type=int, default=5, help="epochs between estimates (default 5)")
    p.add_argument("--method", default="lanczos", help="lanczos (largest algebraic, default) | power (the paper's)")
    p.add_argument("--iterations", type=int, default=20, help="Hessian-vector products per estimate (default 20)")
    p.add_argument("--hessian-examples", type=int,
                   help="Hessian of the loss on this many fixed random training examples (default: all)")
    p.add_argument("--initial-condition", type=int, default=0, help="which initial condition of --seed to follow")


def _sharpness(args) -> int:
    from tqdm.auto import tqdm

    from chaosgd import classification
    from chaosgd.ensemble import initial_conditions
    from chaosgd.sharpness import METHODS, track_sharpness

    if args.method not in METHODS:
        raise ValueError(f"unknown method {args.method!r}; choose one of {list(METHODS)}")
    plots = _pyplot_free_plots()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset, model = _data_and_model(args)
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


def _add_toymap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eta-min", type=float, default=0.01)
    p.add_argument("--eta-max", type=float, default=2.2)
    p.add_argument("--n", type=int, default=2000, help="number of learning rates (default 2000)")
    p.add_argument("--transient", type=int, default=3000, help="steps discarded before recording (default 3000)")
    p.add_argument("--keep", type=int, default=200, help="orbit points kept per learning rate (default 200)")
    p.add_argument("--steps", type=int, default=5000, help="steps averaged for the exponent (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/toymap", help="output folder (default runs/toymap)")


def _toymap(args) -> int:
    from chaosgd.toymap import orbit_diagram, toy_lyapunov

    if not 0 < args.eta_min < args.eta_max or args.n < 2:
        raise ValueError("need 0 < --eta-min < --eta-max and --n >= 2")
    plots = _pyplot_free_plots()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    etas = np.linspace(args.eta_min, args.eta_max, args.n)
    start = time.perf_counter()
    diagram = orbit_diagram(etas, n_transient=args.transient, n_keep=args.keep, seed=args.seed)
    lam, escaped = toy_lyapunov(etas, n_transient=args.transient, n_steps=args.steps, seed=args.seed)
    seconds = time.perf_counter() - start
    np.savez(out / "toymap.npz", eta=etas, orbit=diagram.points, lyapunov=lam, escaped=escaped)
    plots.save(plots.plot_orbit_diagram(diagram), out / "fig6_orbit_diagram.png")
    plots.save(plots.plot_toy_lyapunov(etas, lam, escaped), out / "fig7_lyapunov.png")
    chaotic = etas[np.nan_to_num(lam, nan=-1) > 0]
    print(f"toy map over {args.n} learning rates in {seconds:.2f} s: "
          + (f"lambda > 0 first at eta = {chaotic.min():.4f}, " if chaotic.size else "no chaos, ")
          + (f"orbits escape from eta = {etas[escaped].min():.4f}" if escaped.any() else "no escape")
          + f"; results and figures in {out}")
    return 0


def _add_sweep(p: argparse.ArgumentParser) -> None:
    from chaosgd.presets import PRESETS
    p.add_argument("experiment", help=f"a preset ({', '.join(sorted(PRESETS))}) or a TOML configuration file")
    p.add_argument("--quick", action="store_true", help="the preset's quick scale (minutes on a laptop)")
    p.add_argument("--run-dir", help="run folder (default runs/<configuration name>)")
    p.add_argument("--executor", help="serial | processes (default on CPU) | dask")
    p.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a LocalCluster)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field, e.g. --set training.epochs=50 --set 'training.etas=[1, 10]' (TOML values)")
    p.add_argument("--data-dir", help="folder holding the data set (sets data.path)")
    p.add_argument("--device", choices=["cpu", "gpu"],
                   help="where JAX computes (default: JAX's choice, a GPU when jax[cuda] is installed); with gpu the "
                        "default executor is serial: one process per GPU")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _use_device(device: str | None) -> None:
    """Pin JAX (and the worker processes, through the environment) to the CPU or a GPU, or say why not."""
    if device is None:
        return
    import os

    import jax
    os.environ["JAX_PLATFORMS"] = {"cpu": "cpu", "gpu": "cuda"}[device]
    jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])
    try:
        jax.devices()
    except Exception:  # jax raises RuntimeError or, for a platform it lacks entirely, AssertionError
        raise RuntimeError(f"--device {device}: JAX cannot use it here; for a GPU install a CUDA build of JAX "
                           "(pip install 'jax[cuda12]') on a machine with an NVIDIA GPU, or use --device cpu") from None


def _experiment(args):
    import tomllib

    from chaosgd.config import Config, ConfigError
    from chaosgd.presets import preset

    path = Path(args.experiment)
    config = Config.load(path) if path.suffix == ".toml" or path.is_file() else preset(args.experiment,
                                                                                       quick=args.quick)
    changes = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set needs FIELD=VALUE; got {item!r}")
        try:
            changes[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            changes[key.strip()] = text  # a bare word: a string
    if args.data_dir:
        changes["data.path"] = args.data_dir
    return config.with_values(**changes) if changes else config


def _run_sweep(args) -> Path:
    from chaosgd.sweep import sweep

    config = _experiment(args)
    _use_device(args.device)
    executor = args.executor or ("serial" if args.device == "gpu" else "processes")
    run_dir = Path(args.run_dir or Path("runs") / config.name)
    return sweep(config, run_dir, executor=executor, workers=args.workers, scheduler=args.scheduler,
                 progress=not args.quiet)


def _sweep(args) -> int:
    print(f"records in {_run_sweep(args)}; `chaosgd report` writes its report")
    return 0


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a sweep's run folder")
    p.add_argument("--eta", type=float, default=10.0, help="learning rate of figures 2 and 3 (nearest in the grid)")


def _report(args) -> int:
    from chaosgd.report import write_report

    print(write_report(args.run_dir, lyapunov_eta=args.eta))
    return 0


def _reproduce(args) -> int:
    from chaosgd.report import write_report

    run_dir = _run_sweep(args)
    _toymap(argparse.Namespace(eta_min=0.01, eta_max=2.2, n=2000, transient=3000, keep=200, steps=5000, seed=0,
                               out=str(run_dir / "toymap")))
    print(write_report(run_dir))
    return 0


def _pyplot_free_plots():
    """The plots module with a non-interactive backend (works without a display)."""
    import matplotlib
    matplotlib.use("Agg")
    from chaosgd import plots
    return plots


def _nanmean(x) -> float | None:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _fmt(value, spec) -> str:
    return "nan" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
