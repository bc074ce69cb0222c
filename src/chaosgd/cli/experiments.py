"""``chaosgd sweep``, ``run``, ``reproduce``, ``report`` and ``sweetspot``: experiments over learning rates."""

from __future__ import annotations

import argparse

from chaosgd.cli.options import (add_execution, add_experiment, add_out, experiment, one_point, out_folder,
                                 pyplot_free_plots, run_sweep)
from chaosgd.experiments.store import RUNS


def add_sweep(p: argparse.ArgumentParser) -> None:
    add_experiment(p)
    add_out(p, "runs/<name>")
    add_execution(p)


def report(run_dir, **options) -> None:
    """The report of a run folder, or of the plan a sweep just ran (from what it holds: nothing is read or fitted
    again)."""
    from chaosgd.experiments.report import write_report
    pyplot_free_plots()
    print(f"report: {write_report(run_dir, log=print, **options)}")


def cmd_sweep(args) -> int:
    report(run_sweep(args))
    return 0


def cmd_run(args) -> int:
    """A sweep, then the whole per-learning-rate table."""
    from chaosgd.experiments.results import summarize

    plan = run_sweep(args)
    summary = summarize(plan)
    target = summary.config.training.target
    axis = summary.config.training.axis
    if axis is not None:
        print(f"a 2-D sweep: each row at the {axis} of its first column")
    first = f"{axis.split('.')[-1]:>12} " if axis else ""
    print(first + f"{'eta':>8} {'lambda_NMLE':>12} {'p':>5} {'loss(T)':>9} {'test acc(T)':>11} {'diverged':>8} "
          f"{'stuck':>6}  reached {target:.0%}, median and restricted mean epochs to it [95 % CI]")
    def number(value, spec):  # what the report prints for a value that is not measured
        return format("–", spec.split(".")[0]) if value != value else format(value, spec)

    for r in summary.rows:
        median = f"> {r['tau_horizon']}" if r["tau_median"] == float("inf") else f"{r['tau_median']:g}"
        print((f"{r[axis]:>12g} " if axis else "") + f"{r['eta']:>8g} {number(r['lambda_nmle'], '>12.4f')} "
              f"{number(r['p_percent'], '>4.0f')}% {number(r['final_loss_mean'], '>9.4g')} "
              f"{number(r['final_test_accuracy_mean'], '>11.3f')} {r['diverged_fraction']:>8.0%} "
              f"{r['stuck_at_chance']:>6}  {r['n_initial'] - r['tau_censored']}/{r['n_initial']}, median {median}, "
              f"{r['tau_rmst']:.4g} [{number(r['tau_rmst_ci_low'], '.4g')}, {number(r['tau_rmst_ci_high'], '.4g')}]")
    report(plan, summary=summary)
    return 0


def cmd_reproduce(args) -> int:
    from chaosgd.cli.measure import toymap

    plan = run_sweep(args)
    toymap(plan.run.toymap_dir)
    report(plan)
    return 0


def add_report(p: argparse.ArgumentParser) -> None:
    from chaosgd.experiments.results import REANALYSIS_FIELDS

    p.add_argument("run_dir", help="a sweep's run folder")
    p.add_argument("--eta", type=float,
                   help="learning rate of figures 2 and 3, the nearest in the grid (default: the first with p >= 50 "
                        "%%, where sensitivity sets in)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="re-analyse the finished run with another value of " + ", ".join(REANALYSIS_FIELDS)
                        + " (repeatable; e.g. training.target_hold=5): nothing is trained again; needs --out")
    p.add_argument("--out", metavar="DIR", help="folder for a re-analysis's report.html, results.csv and "
                                                "results.parquet (not a run folder, nor inside this run)")


def cmd_report(args) -> int:
    from chaosgd.experiments.config import ConfigError, parse_assignment
    from chaosgd.experiments.results import check_reanalysis_fields

    changes = {}
    for item in args.set:
        key = item.partition("=")[0].strip()
        check_reanalysis_fields([key])  # before its value is parsed: the message names what can change
        if key in changes:
            raise ConfigError(f"--set {key} is given twice; give each field once")
        changes[key] = parse_assignment(item)[1]
    if args.out and not changes:
        raise ValueError("--out is for a re-analysis (--set FIELD=VALUE); without one the report is written into "
                         "the run folder")
    report(args.run_dir, lyapunov_eta=args.eta, changes=changes or None, out=args.out)
    return 0


def add_sweetspot(p: argparse.ArgumentParser) -> None:
    import inspect

    from chaosgd.defaults import CONFIDENCE, SEARCH_COPIES, SEARCH_INITIAL
    from chaosgd.sweetspot import find_sweet_spot

    # The search's own defaults, so that they live in one place.
    search = {k: v.default for k, v in inspect.signature(find_sweet_spot).parameters.items()}
    add_experiment(p)
    add_out(p, "runs/<name>-sweetspot")
    add_execution(p)
    p.add_argument("--eta-min", type=float, default=0.01, help="low end of the initial range")
    p.add_argument("--eta-max", type=float, default=20.0, help="high end of the initial range")
    p.add_argument("--rel-width", type=float, default=search["rel_width"],
                   help="resolution around the recommendation and the onset: neighbours at most 1 + this apart "
                        "(default: four points a decade)")
    p.add_argument("--p-high", type=float, default=search["p_high"],
                   help="p (%%) that counts as fully developed chaos: the onset")
    p.add_argument("--confidence", type=float, default=CONFIDENCE, help="level of every interval")
    p.add_argument("--search-epochs", type=int,
                   help="epochs per evaluation (default: half the configuration's epochs, at most 60)")
    p.add_argument("--search-initial", type=int,
                   help=f"initial conditions per evaluation (default: {SEARCH_INITIAL}, or the configuration's if "
                        "fewer)")
    p.add_argument("--search-copies", type=int, default=SEARCH_COPIES,
                   help="perturbed copies per initial condition in the evaluations")
    p.add_argument("--parallel", type=int, default=search["parallel"],
                   help="learning rates evaluated at once; they run side by side on the executor (processes, or "
                        "dask with --scheduler)")
    p.add_argument("--max-initial", type=int,
                   help="where a decision is open (progress intervals that overlap the best's, p's interval "
                        "containing --p-high at the onset), train more initial conditions (doubling) up to this many")
    p.add_argument("--reuse", metavar="RUN",
                   help="a sweep's run folder whose finished learning rates are reused (it must have trained "
                        "--search-epochs epochs)")
    p.add_argument("--train", action="store_true",
                   help="then train the configuration's initial conditions at the recommended eta for its full "
                        "epoch budget and report the time to its target accuracy")


def cmd_sweetspot(args) -> int:
    import json
    import shutil
    import time

    from chaosgd.atomic import atomic_write
    from chaosgd.defaults import SEARCH_INITIAL
    from chaosgd.experiments.search import config_evaluator, search_epochs, stored_evaluations
    from chaosgd.experiments.sweep import Interrupted
    from chaosgd.onset import check_search
    from chaosgd.sweetspot import find_sweet_spot

    config = one_point(experiment(args), "the sweet-spot search")
    initial = args.search_initial or min(SEARCH_INITIAL, config.ensemble.initial)
    check_search(eta_min=args.eta_min, eta_max=args.eta_max, p_high=args.p_high, rel_width=args.rel_width,
                 parallel=args.parallel, max_initial=args.max_initial, n_initial=initial, confidence=args.confidence)
    for name in ("search_epochs", "search_initial", "search_copies"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {value}")
    epochs = args.search_epochs or search_epochs(config)
    plots = pyplot_free_plots()
    out = out_folder(args, RUNS / f"{config.name}-sweetspot")
    fresh = not out.exists()
    # The search asks --parallel learning rates at a time: worker processes for them, unless it asks one at a time
    # or computes on a GPU (one process holds it).
    executor = args.executor or ("processes" if args.parallel > 1 and args.device != "gpu" else "serial")
    workers = args.workers if args.workers is not None else (args.parallel if executor != "serial" else None)
    evaluate = LoggedEvaluator(config_evaluator(config, epochs=epochs, initial=initial, copies=args.search_copies,
                                                confidence=args.confidence, store=out / "evaluations",
                                                executor=executor, workers=workers, scheduler=args.scheduler,
                                                device=args.device))
    started = time.monotonic()
    try:
        known = stored_evaluations(args.reuse, evaluate.inner) if args.reuse else None
    except BaseException:  # refused: a folder this command made for its evaluations goes with it
        evaluate.close()
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        raise
    try:
        for e in sorted((known or {}).values(), key=lambda e: e.eta):
            LoggedEvaluator.log(e, f"reused from {args.reuse}")
        spot = find_sweet_spot(evaluate, eta_min=args.eta_min, eta_max=args.eta_max, p_high=args.p_high,
                               rel_width=args.rel_width, known=known, parallel=args.parallel,
                               max_initial=args.max_initial, confidence=args.confidence)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: the evaluations finished so far are kept in {out / 'evaluations'}; run "
                          "the same command again to resume") from None
    finally:
        evaluate.close()
    seconds = time.monotonic() - started
    grid = len(config.training.etas) * config.ensemble.initial * (1 + config.ensemble.copies) * config.training.epochs
    reused = evaluate.inner.network_epochs_loaded  # (a --reuse sweep's evaluations are not counted at all)
    cost = {"network_epochs": spot.network_epochs, "reused_network_epochs": reused, "seconds": round(seconds, 1),
            "grid_network_epochs": grid,
            "fraction_of_grid": spot.network_epochs / grid, "search_epochs": epochs, "search_initial": initial,
            "search_copies": args.search_copies}
    plots.save(plots.plot_sweet_spot(spot)[0], out / "sweetspot.png")
    atomic_write(out / "sweetspot.json", json.dumps({**spot.to_dict(), "cost": cost}, indent=2, default=float))
    if spot.eta == spot.eta:
        print(f"recommended eta = {spot.eta:.4g} (interval {spot.low:.4g} .. {spot.high:.4g})")
    else:
        print("no recommended eta")
    if spot.onset is not None and spot.p_high_reached:
        print(f"onset of chaos (p >= {args.p_high:g}%): eta = {spot.onset.eta:.4g}, bracket {spot.onset.low:.4g} .. "
              f"{spot.onset.high:.4g}, " + ("both ends decided" if spot.onset.confident else "not both ends decided")
              + f" at {args.confidence:.0%} confidence")
    print(spot.reason)
    reuse_note = f" ({reused:,} of them computed earlier and reused)" if reused else ""
    print(f"cost: {spot.network_epochs:,} network-epochs{reuse_note} in {seconds:.0f} s, "
          f"{cost['fraction_of_grid']:.1%} of the configuration's grid ({len(config.training.etas)} learning rates x "
          f"{config.ensemble.initial} x "
          f"(1 + {config.ensemble.copies}) networks x {config.training.epochs} epochs = {grid:,}); evidence in {out}")
    if args.train and spot.eta == spot.eta:
        from chaosgd.experiments.results import summarize

        # (one folder per learning rate: a search resumed with other settings may recommend another)
        trained = run_sweep(args, config.with_values(**{"training.etas": (spot.eta,)}),
                            out / "trained" / f"eta-{spot.eta:.6g}")
        row = summarize(trained).rows[0]
        print(f"trained at eta = {spot.eta:.4g}: {row['n_initial'] - row['tau_censored']}/{row['n_initial']} reached "
              f"{config.training.target:.0%}, restricted mean {row['tau_rmst']:.1f} epochs [95 % CI "
              f"{row['tau_rmst_ci_low']:.1f}, {row['tau_rmst_ci_high']:.1f}] up to epoch {row['tau_horizon']}; "
              f"records in {trained.run}")
    return 0


class LoggedEvaluator:
    """An evaluator that prints one line per evaluation (and per extension with more initial conditions)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @staticmethod
    def log(e, note: str = ""):
        print(f"eta = {e.eta:.4g}: p = {e.p:.0f}% (CI {e.ci_low:.0f}..{e.ci_high:.0f}, {e.n} initial conditions), "
              f"lambda_NMLE = {e.lambda_nmle:.3f}, progress {e.progress:.2f} [{e.progress_low:.2f}, "
              f"{e.progress_high:.2f}]" + (", diverges" if e.diverges else "")
              + (f", {e.stuck_fraction:.0%} stuck at chance" if e.stuck_fraction else "")
              + (f", {e.n_unresolved} unresolved (left out)" if e.n_unresolved else "")
              + (f"; {note}" if note else ""), flush=True)
        return e

    def __call__(self, eta):
        return self.log(self.inner(eta))

    def extend(self, eta, count):
        return self.log(self.inner.extend(eta, count))

    def many(self, etas):
        return [self.log(e) for e in self.inner.many(etas)]
