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
DEFAULT_TARGET = {"cifar10": 0.3}  # 0.9 otherwise; the paper uses 0.8 for its CNN


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaosgd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands.add_parser("run", help="train an ensemble over learning rates and record it"))
    data = commands.add_parser("data", help="data sets").add_subparsers(dest="data_command", required=True)
    fetch = data.add_parser("fetch", help="download a data set's standard files (needs internet)")
    fetch.add_argument("name", choices=["mnist", "fashion-mnist", "cifar10"])
    fetch.add_argument("--data-dir", help="folder that will hold <name>/ (default: $CHAOSGD_DATA or ~/.chaosgd/data)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        from chaosgd.datasets.fetch import fetch as fetch_data
        print(fetch_data(args.name, path=args.data_dir))
        return 0
    except (ValueError, FileNotFoundError) as error:
        print(f"chaosgd: error: {error}", file=sys.stderr)
        return 2


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="iris", help="iris | mnist | fashion-mnist | cifar10 | blobs (default iris)")
    p.add_argument("--data-dir", help="folder holding <dataset>/ (default: $CHAOSGD_DATA or ~/.chaosgd/data)")
    p.add_argument("--standardize", action="store_true", help="standardise features (the paper does not)")
    p.add_argument("--model", default="mlp", help="mlp | cnn (default mlp)")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden widths of the MLP (default: 10 Iris, 64 MNIST)")
    p.add_argument("--activation", default="tanh", help="tanh | sigmoid | relu (default tanh)")
    p.add_argument("--sigma", type=float, help="weights ~ N(0, sigma^2) (default 1 MLP, 0.01 CNN)")
    p.add_argument("--etas", type=float, nargs="+", default=list(PAPER_ETAS), help="learning rates (paper's grid)")
    p.add_argument("--initial", type=int, default=50, help="initial conditions |S| (default 50)")
    p.add_argument("--copies", type=int, default=5, help="perturbed copies M per initial condition (default 5)")
    p.add_argument("--epsilon", type=float, default=1e-8, help="radius of the epsilon-ball (default 1e-8)")
    p.add_argument("--perturb", default="all", help="all | weights: parameters the ball perturbs (default all)")
    p.add_argument("--epochs", type=int, default=201, help="gradient-descent steps (default 201)")
    p.add_argument("--l2", type=float, default=0.0, help="L2 coefficient lambda in L + lambda/2 |W|^2 (default 0)")
    p.add_argument("--target", type=float, help="target test accuracy for the training time (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="seed of initial conditions, perturbations, Iris split")
    p.add_argument("--dtype", default="float64", help="float64 (default) | float32")
    p.add_argument("--groups-per-chunk", type=int, help="groups trained at once (default: fit half the memory)")
    p.add_argument("--out", default="runs/latest", help="folder for records.npz and summary.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run(args) -> int:
    from chaosgd import classification, run
    from chaosgd.datasets import load
    from chaosgd.ensemble import epsilon_ball, initial_conditions, over_learning_rates
    from chaosgd.models import count_parameters, for_dataset
    from chaosgd.training_time import time_to_accuracy

    dataset = load(args.dataset, path=args.data_dir, standardize=args.standardize, seed=args.seed)
    hidden = tuple(args.hidden) if args.hidden else DEFAULT_HIDDEN.get(args.dataset, (64,))
    model = for_dataset(args.model, dataset.example_shape, dataset.n_classes, hidden=hidden,
                        activation=args.activation, sigma=args.sigma, dtype=args.dtype)
    target = args.target if args.target is not None else DEFAULT_TARGET.get(args.dataset, 0.9)
    if not 0 < target <= 1:
        raise ValueError(f"--target must be a fraction in (0, 1]; got {target}")
    centres = initial_conditions(model, args.initial, seed=args.seed)
    ball = epsilon_ball(centres, args.copies, epsilon=args.epsilon, perturb=args.perturb, seed=args.seed)
    params, eta, ic = over_learning_rates(ball, args.etas)
    print(f"{dataset.name}: {len(dataset.y_train)} train / {len(dataset.y_test)} test; {model} with "
          f"{count_parameters(model):,} parameters; {len(args.etas)} learning rates x {args.initial} initial "
          f"conditions x (1 + {args.copies}) copies, {args.epochs} epochs")
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
    (out / "summary.json").write_text(json.dumps({"command": vars(args), "seconds": seconds, "target": target,
                                                  "by_eta": rows}, indent=2))
    print(f"{'eta':>8} {'diverged':>8} {'loss(T)':>9} {'test acc(T)':>11} {'<ln d(0)>':>9} {'<ln d(T)>':>9}  "
          f"training time")
    for r in rows:
        print(f"{r['eta']:>8g} {r['diverged']:>8d} {_fmt(r['final_loss'], '.4f'):>9} "
              f"{_fmt(r['final_test_accuracy'], '.3f'):>11} {_fmt(r['mean_ln_d_start'], '.2f'):>9} "
              f"{_fmt(r['mean_ln_d_end'], '.2f'):>9}  {r['time_to_target']}")
    print(f"{records.eta.size * records.epochs:,} network-epochs in {seconds:.1f} s; records in {out / 'records.npz'}")
    return 0


def _nanmean(x) -> float | None:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _fmt(value, spec) -> str:
    return "nan" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
