"""chaosgd's learning-rate recommendation against the learning-rate range test, with a full grid as ground truth.

For each task (a configuration: data, network, target accuracy, epoch budget of full-batch gradient descent):
- ground truth: a sweep of the grid's learning rates with ``--initial`` initial conditions; the fastest learning
  rate by the restricted mean time to the target (censoring-aware, with its 95 % CI), and the overlap set: the
  learning rates whose CI reaches the best's;
- chaosgd: ``find_sweet_spot`` with its defaults (eta in 0.01 .. 20, 4 initial conditions, 1 copy, half the budget
  at most 60 epochs), once per seed (the seed of the initial conditions), both of its rules from the same search
  (``edge``: the largest learning rate as fast as the fastest measured, not above the onset; ``fastest``);
- the range test (Smith, arXiv:1506.01186) on the same network as a float64 torch module initialised as chaosgd
  initialises it, with torch-lr-finder (its suggestion: the steepest descent of the smoothed loss), full-batch and
  with minibatches of 64, and fastai's valley and steep rules on the same curves (``lr_baselines.py``), once per
  seed;
- each suggestion trained with the ground truth's initial conditions for the whole budget: its restricted mean
  time to the target relative to the grid's best, whether its CI reaches the best's (in the overlap set), its cost
  in network-epochs relative to the grid.

Results: ``OUT/<task>.json`` per task as it finishes, ``OUT/summary.csv``; ``docs/lr_finders.md`` is written from
them by ``--table``. Run folders (resumable) go to ``--work``.

    CHAOSGD_DATA=DATA .venv/bin/python benchmarks/lr_finders.py --tasks iris wine
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

GRID_TABULAR = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


def tasks() -> dict:
    """The benchmark's tasks: the paper's (at the scale a 2-core CPU allows) and data sets the paper does not use."""
    from chaosgd import preset
    from chaosgd.experiments.config import Config

    def tabular(name, data, target, hidden=16):
        return Config.from_dict({"name": name, "data": {"name": data, "standardize": True},
                                 "model": {"hidden": [hidden], "activation": "tanh"},
                                 "ensemble": {"initial": 50, "copies": 1},
                                 "training": {"etas": list(GRID_TABULAR), "epochs": 200, "target": target,
                                              "stop_copies": True}})
    mnist = {"ensemble.copies": 1, "training.stop_copies": True}
    return {
        "iris": preset("iris").with_values(**{"ensemble.copies": 1}),
        "mnist-tanh": preset("mnist-tanh", quick=True).with_values(**mnist),
        "mnist-sigmoid": preset("mnist-sigmoid", quick=True).with_values(**mnist),
        "mnist-relu": preset("mnist-relu", quick=True).with_values(
            **mnist, **{"training.etas": (0.01, 0.03, 0.1, 0.3, 1.0, 2.5, 5.0), "training.target": 0.7}),
        "wine": tabular("wine", "sklearn:wine", 0.9),
        "breast-cancer": tabular("breast-cancer", "sklearn:breast_cancer", 0.95),
        "digits": tabular("digits", "sklearn:digits", 0.9, hidden=32),
    }


def torch_module(config, data):
    """The configuration's MLP as a float64 torch module, weights N(0, sigma^2) and biases 0 like chaosgd's."""
    import torch

    sizes = (data.n_features, *config.model.hidden, data.n_classes)
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}[config.model.activation]
    layers = [torch.nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    module = torch.nn.Sequential(*layers).double()
    with torch.no_grad():
        for layer in module:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, 1.0)
                layer.bias.zero_()
    return module


def time_at(config, eta: float, work: Path) -> dict:
    """Restricted mean time to the target (and CI) when training at ``eta``: a sweep of that one learning rate."""
    from chaosgd import summarize, sweep

    run = work / f"at-{eta:.6g}"
    sweep(config.with_values(**{"training.etas": (float(eta),)}), run, executor="serial", progress=False,
          log=lambda *a: None)
    row = summarize(run).rows[0]
    return {k: float(row[k]) for k in ("eta", "tau_rmst", "tau_rmst_ci_low", "tau_rmst_ci_high", "reached_percent",
                                       "stuck_at_chance", "diverged_fraction", "network_epochs")}


def ground_truth(config, work: Path) -> dict:
    from chaosgd import summarize, sweep

    sweep(config, work / "grid", executor="serial", progress=False, log=lambda *a: None)
    rows = summarize(work / "grid").rows
    finite = [r for r in rows if np.isfinite(r["tau_rmst"])]
    best = min(finite, key=lambda r: r["tau_rmst"])
    low = best["tau_rmst_ci_low"] if np.isfinite(best["tau_rmst_ci_low"]) else best["tau_rmst"]
    overlap = [r["eta"] for r in rows if np.isfinite(r["tau_rmst_ci_low"]) and r["tau_rmst_ci_low"] <= max(
        best["tau_rmst_ci_high"], low)]
    return {"best_eta": best["eta"], "best_rmst": best["tau_rmst"], "best_ci": [low, best["tau_rmst_ci_high"]],
            "overlap": overlap, "horizon": int(best["tau_horizon"]),
            "network_epochs": int(sum(r["network_epochs"] for r in rows)),
            "rows": [{k: r[k] for k in ("eta", "p_percent", "lambda_nmle", "tau_rmst", "tau_rmst_ci_low",
                                        "tau_rmst_ci_high", "reached_percent", "stuck_at_chance")} for r in rows]}


def chaosgd_suggestion(config, seed: int, work: Path) -> dict:
    from chaosgd.defaults import SEARCH_COPIES, SEARCH_INITIAL
    from chaosgd.experiments.search import config_evaluator, search_epochs
    from chaosgd.sweetspot import find_sweet_spot

    seeded = config.with_values(**{"ensemble.seed": 1000 + seed})
    evaluate = config_evaluator(seeded, epochs=search_epochs(config), initial=SEARCH_INITIAL, copies=SEARCH_COPIES,
                                store=work / f"search-{seed}")
    started = time.monotonic()
    try:
        spot = find_sweet_spot(evaluate, eta_min=0.01, eta_max=20.0)
    finally:
        evaluate.close()
    onset = spot.onset.eta if spot.onset is not None else math.nan
    return {"eta": spot.eta, "edge": spot.edge, "fastest": spot.fastest, "interval": [spot.low, spot.high],
            "onset": onset, "reason": spot.reason,
            "network_epochs": spot.network_epochs, "seconds": time.monotonic() - started,
            "evaluations": [{k: getattr(e, k) for k in ("eta", "p", "lambda_nmle", "progress", "progress_low",
                                                         "progress_high", "stuck_fraction", "diverged_fraction")}
                            for e in spot.evaluations]}


def range_tests(config, data, seed: int) -> dict:
    import torch
    from lr_baselines import range_test

    torch.set_num_threads(1)  # (two threads make these small networks many times slower on a 2-core machine)
    x = data.x_train.reshape(len(data.x_train), -1)
    out = {}
    for mode, batch in (("full", None), ("minibatch", 64)):
        started = time.monotonic()
        test = range_test(lambda: torch_module(config, data), x, data.y_train, seed=seed, batch_size=batch,
                          start_lr=1e-4, end_lr=100.0, num_iter=100)
        seconds = time.monotonic() - started
        cost = test.examples / len(data.y_train)  # network-epochs: examples seen over the training set's size
        for rule in ("suggestion", "valley", "steep"):
            name = "torch-lr-finder" if rule == "suggestion" else f"fastai-{rule}"
            out[f"{name} ({mode})"] = {"eta": float(getattr(test, rule)), "network_epochs": cost,
                                       "seconds": seconds}
    return out


def run_task(name: str, config, seeds: int, initial: int, work: Path) -> dict:
    from chaosgd.experiments.problem import dataset

    config = config.with_values(**{"ensemble.initial": initial, "ensemble.seed": 0})
    work = work / name
    started = time.monotonic()
    truth = ground_truth(config, work)
    truth["seconds"] = time.monotonic() - started
    print(f"{name}: grid best eta = {truth['best_eta']:g}, {truth['best_rmst']:.1f} epochs, overlap "
          f"{truth['overlap']}", flush=True)
    data = dataset(config.data)
    suggestions: dict[str, list] = {}
    for seed in range(seeds):
        spot = chaosgd_suggestion(config, seed, work)
        # Both rules of the same search (sweetspot.RULES): the measurements decide the default.
        suggestions.setdefault("chaosgd (edge)", []).append({**spot, "eta": spot["edge"]})
        suggestions.setdefault("chaosgd (fastest)", []).append({**spot, "eta": spot["fastest"]})
        for method, value in range_tests(config, data, seed).items():
            suggestions.setdefault(method, []).append(value)
    times: dict[str, dict] = {}
    for method, values in suggestions.items():
        for v in values:
            eta = float(f"{v['eta']:.3g}") if np.isfinite(v["eta"]) and v["eta"] > 0 else math.nan
            v["eta_trained"] = eta
            if np.isfinite(eta) and eta not in times:
                times[eta] = time_at(config, eta, work)
            t = times.get(eta)
            v["rmst"] = t["tau_rmst"] if t else float(truth["horizon"])
            v["rmst_ci"] = [t["tau_rmst_ci_low"], t["tau_rmst_ci_high"]] if t else [math.nan, math.nan]
            v["ratio"] = v["rmst"] / truth["best_rmst"]
            v["in_overlap"] = bool(t) and np.isfinite(t["tau_rmst_ci_low"]) and (
                t["tau_rmst_ci_low"] <= truth["best_ci"][1])
            v["cost_fraction"] = v["network_epochs"] / truth["network_epochs"]
        print(f"{name} {method}: eta {[round(v['eta'], 4) for v in values]}, ratio "
              f"{[round(v['ratio'], 2) for v in values]}", flush=True)
    return {"task": name, "config": config.to_dict(), "initial": initial, "seeds": seeds, "truth": truth,
            "suggestions": suggestions, "seconds": time.monotonic() - started}


def summary_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        for method, values in r["suggestions"].items():
            etas = np.array([v["eta"] for v in values], dtype=float)
            ratios = np.array([v["ratio"] for v in values])
            finite = etas[np.isfinite(etas) & (etas > 0)]
            rows.append({
                "task": r["task"], "method": method, "eta_median": float(np.median(etas)) if len(finite) else math.nan,
                "eta_spread": float(finite.max() / finite.min()) if len(finite) else math.nan,
                "ratio_median": float(np.median(ratios)), "ratio_worst": float(ratios.max()),
                "in_overlap": int(sum(v["in_overlap"] for v in values)), "seeds": len(values),
                "none_or_nan": int(len(etas) - len(finite)),
                "cost_fraction": float(np.median([v["cost_fraction"] for v in values])),
                "best_eta": r["truth"]["best_eta"], "best_rmst": r["truth"]["best_rmst"],
                "horizon": r["truth"]["horizon"]})
    return rows


def table(results: list[dict]) -> str:
    lines = ["| task | grid's fastest eta: epochs [95 % CI] of budget (overlap set) | method | suggested eta, median "
             "(max/min over seeds) | time to target at it / best, median (worst) | in overlap set | cost / grid |",
             "|---|---|---|---|---|---|---|"]
    for row in summary_rows(results):
        r = next(x for x in results if x["task"] == row["task"])
        t = r["truth"]
        truth = (f"{t['best_eta']:g}: {t['best_rmst']:.0f} [{t['best_ci'][0]:.0f}, {t['best_ci'][1]:.0f}] of "
                 f"{t['horizon']} ({', '.join(f'{e:g}' for e in t['overlap'])})")
        lines.append(f"| {row['task']} | {truth} | {row['method']} | {row['eta_median']:.3g} "
                     f"({row['eta_spread']:.2g}x) | {row['ratio_median']:.2f} ({row['ratio_worst']:.2f}) | "
                     f"{row['in_overlap']}/{row['seeds']} | {row['cost_fraction']:.1%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(tasks()), help="tasks to run (default: all)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per suggestion method")
    parser.add_argument("--mnist-seeds", type=int, default=3, help="the same for the MNIST tasks")
    parser.add_argument("--initial", type=int, default=50,
                        help="initial conditions of the ground truth and of each suggestion's training")
    parser.add_argument("--mnist-initial", type=int, default=12, help="the same for the MNIST tasks")
    parser.add_argument("--work", default="/tmp/chaosgd-lr-finders", help="run folders (resumable)")
    parser.add_argument("--out", default=str(HERE / "results" / "lr_finders"), help="results folder")
    parser.add_argument("--table", action="store_true", help="only print the table of the results in --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        defined = tasks()
        for name in args.tasks:
            mnist = name.startswith("mnist")
            result = run_task(name, defined[name], args.mnist_seeds if mnist else args.seeds,
                              args.mnist_initial if mnist else args.initial, Path(args.work))
            (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=float))
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    import pandas as pd
    pd.DataFrame(summary_rows(results)).to_csv(out / "summary.csv", index=False)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
