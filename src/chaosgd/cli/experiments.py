"""``chaosgd toymap``, ``sweep``, ``report`` and ``reproduce``: the paper's experiments and their reports."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from chaosgd.cli.common import pyplot_free_plots


def add_toymap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eta-min", type=float, default=0.01)
    p.add_argument("--eta-max", type=float, default=2.2)
    p.add_argument("--n", type=int, default=2000, help="number of learning rates (default 2000)")
    p.add_argument("--transient", type=int, default=3000, help="steps discarded before recording (default 3000)")
    p.add_argument("--keep", type=int, default=200, help="orbit points kept per learning rate (default 200)")
    p.add_argument("--steps", type=int, default=5000, help="steps averaged for the exponent (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/toymap", help="output folder (default runs/toymap)")


def cmd_toymap(args) -> int:
    from chaosgd.toymap import orbit_diagram, toy_lyapunov

    if not 0 < args.eta_min < args.eta_max or args.n < 2:
        raise ValueError("need 0 < --eta-min < --eta-max and --n >= 2")
    plots = pyplot_free_plots()
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


def add_sweep(p: argparse.ArgumentParser) -> None:
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


def use_device(device: str | None) -> None:
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


def experiment(args):
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


def run_sweep(args) -> Path:
    from chaosgd.sweep import sweep

    config = experiment(args)
    use_device(args.device)
    executor = args.executor or ("serial" if args.device == "gpu" else "processes")
    run_dir = Path(args.run_dir or Path("runs") / config.name)
    return sweep(config, run_dir, executor=executor, workers=args.workers, scheduler=args.scheduler,
                 progress=not args.quiet)


def cmd_sweep(args) -> int:
    print(f"records in {run_sweep(args)}; `chaosgd report` writes its report")
    return 0


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a sweep's run folder")
    p.add_argument("--eta", type=float, default=10.0, help="learning rate of figures 2 and 3 (nearest in the grid)")


def cmd_report(args) -> int:
    from chaosgd.report import write_report

    print(write_report(args.run_dir, lyapunov_eta=args.eta))
    return 0


def cmd_reproduce(args) -> int:
    from chaosgd.report import write_report

    run_dir = run_sweep(args)
    cmd_toymap(argparse.Namespace(eta_min=0.01, eta_max=2.2, n=2000, transient=3000, keep=200, steps=5000, seed=0,
                               out=str(run_dir / "toymap")))
    print(write_report(run_dir))
    return 0


def add_sweetspot(p: argparse.ArgumentParser) -> None:
    add_sweep(p)
    p.add_argument("--eta-min", type=float, default=0.01, help="low end of the initial range (default 0.01)")
    p.add_argument("--eta-max", type=float, default=20.0, help="high end of the initial range (default 20)")
    p.add_argument("--rel-width", type=float, default=0.1, help="stop when high/low - 1 is below this (default 0.1)")
    p.add_argument("--p-high", type=float, default=95.0, help="p (%%) that counts as fully developed (default 95)")
    p.add_argument("--confidence", type=float, default=0.95, help="level of the Wilson intervals (default 0.95)")
    p.add_argument("--search-epochs", type=int, default=60,
                   help="epochs per evaluation: the exponential phase only (default 60)")
    p.add_argument("--parallel", type=int, default=1,
                   help="learning rates evaluated per round once the onset is bracketed (default 1: bisection); they "
                        "run side by side in worker processes (--workers, default one per core) or, with --executor "
                        "dask, on a Dask cluster (--scheduler)")
    p.add_argument("--max-initial", type=int,
                   help="where p's confidence interval still contains --p-high, train more initial conditions "
                        "(doubling) up to this many, so that the bracket holds at --confidence")
    p.add_argument("--reuse", help="a sweep's run folder whose finished learning rates are reused")
    p.add_argument("--train", action="store_true",
                   help="then train the configuration's initial conditions at the suggested eta for its full epoch "
                        "budget and report the time to its target accuracy")


class LoggedEvaluator:
    """An evaluator that prints one line per evaluation (and per extension with more initial conditions)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @staticmethod
    def _log(e):
        print(f"eta = {e.eta:.5g}: p = {e.p:.0f}% (CI {e.ci_low:.0f}..{e.ci_high:.0f}, {e.n} initial conditions), "
              f"lambda_NMLE = {e.lambda_nmle:.3f}" + (", diverges" if e.diverges else ""), flush=True)
        return e

    def __call__(self, eta):
        return self._log(self.inner(eta))

    def extend(self, eta, count):
        return self._log(self.inner.extend(eta, count))

    def many(self, etas):
        return [self._log(e) for e in self.inner.many(etas)]


def cmd_sweetspot(args) -> int:
    import json

    from chaosgd.sweetspot import config_evaluator, find_sweet_spot, stored_evaluations

    config = experiment(args)
    use_device(args.device)
    plots = pyplot_free_plots()
    out = Path(args.run_dir or Path("runs") / f"{config.name}-sweetspot")
    out.mkdir(parents=True, exist_ok=True)
    known = stored_evaluations(args.reuse, confidence=args.confidence) if args.reuse else None
    if args.executor not in (None, "processes", "dask"):
        raise ValueError(f"sweetspot evaluates with the processes or dask executor; got {args.executor!r}")
    executor = args.executor or "processes"
    workers = 1 if args.device == "gpu" and executor == "processes" else (
        args.workers or min(args.parallel, os.cpu_count() or 1))
    evaluate = LoggedEvaluator(config_evaluator(config, epochs=args.search_epochs, confidence=args.confidence,
                                                workers=workers, executor=executor, scheduler=args.scheduler))
    try:
        spot = find_sweet_spot(evaluate, eta_min=args.eta_min, eta_max=args.eta_max, p_high=args.p_high,
                               rel_width=args.rel_width, known=known, parallel=args.parallel,
                               max_initial=args.max_initial)
    finally:
        evaluate.close()
    plots.save(plots.plot_sweet_spot(spot, p_high=args.p_high), out / "sweetspot.png")
    (out / "sweetspot.json").write_text(json.dumps({
        "eta": spot.eta, "bracket": [spot.low, spot.high], "diverging_edge": spot.diverging_edge,
        "network_epochs": spot.network_epochs, "confident": spot.confident, "confidence": args.confidence,
        "evaluations": [e.__dict__ for e in spot.evaluations]},
        indent=2, default=float))
    if spot.diverging_edge:
        print(f"p never reached {args.p_high:g}% below the learning rates that diverge ({spot.low:.4g} .. "
              f"{spot.high:.4g}); no suggestion")
    else:
        print(f"suggested eta = {spot.eta:.4g} (bracket {spot.low:.4g} .. {spot.high:.4g}, "
              + ("both ends decided" if spot.confident else "not both ends decided")
              + f" at {args.confidence:.0%} confidence), {spot.network_epochs:,} network-epochs; evidence in {out}")
        if args.train:
            from chaosgd.sweep import Task, run_task
            from chaosgd.training_time import time_to_accuracy

            records = run_task(config, Task(0, spot.eta, 0, config.ensemble.initial))
            records.save(out / "trained_at_suggestion.npz")
            print(f"trained at eta = {spot.eta:.4g}: "
                  f"{time_to_accuracy(records.test_accuracy, config.training.target).describe()}")
    return 0
