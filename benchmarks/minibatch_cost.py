"""What an epoch of minibatch training costs against a full-batch epoch of the same ensemble, in the same run.

Workload: MNIST 784-64-10 tanh, float64, an ensemble of K networks (groups of a reference and 3 copies), per-epoch
records on (the loss and accuracy of theta(t) on the whole training set, the test accuracy, the distances).
For each batch size B it times ``chaosgd.run`` over ``--epochs`` epochs with ``UpdateRule(sgd, batch_size=B)`` and,
in the same run, the same ensemble with full batches (gd); the ratio is the cost of an epoch of B-minibatches in
full-batch epochs. An epoch is one pass over the training set whatever B, so both do the same arithmetic in the
large products; minibatches add the gathering of each batch, one more forward pass over the whole training set
for the records (with full batches the loss comes free with the gradient), and per-step overheads that grow with
the number of steps ceil(N/B). Median of ``--repeats`` timings each. ``--records R ...`` also times R records an
epoch (``records_per_epoch``; each record is one more forward pass over the training set and the test set).

Run:  CHAOSGD_DATA=DATA .venv/bin/python benchmarks/minibatch_cost.py [--n-train 60000] [--batches 64 1000 10000]
The cost of records within an epoch at quick scale (results/records_cost.json):
      CHAOSGD_DATA=DATA .venv/bin/python benchmarks/minibatch_cost.py --n-train 10000 --batches 100 1000 \
          --records 1 10 --out benchmarks/results/records_cost.json
Without CHAOSGD_DATA it uses random data of MNIST's shape (the cost does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import chaosgd  # noqa: F401  (float64)
from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.dynamics import UpdateRule
from chaosgd.optimizers import Optimizer


def data_of(n_train: int) -> tuple[dict, str]:
    if os.environ.get("CHAOSGD_DATA"):
        from chaosgd.datasets import load
        d = load("mnist", path=os.environ["CHAOSGD_DATA"])
        return {"x_train": d.x_train[:n_train], "y_train": d.y_train[:n_train], "x_test": d.x_test,
                "y_test": d.y_test}, "MNIST"
    rng = np.random.default_rng(0)
    return {"x_train": rng.random((n_train, 784)), "y_train": rng.integers(0, 10, n_train),
            "x_test": rng.random((10_000, 784)), "y_test": rng.integers(0, 10, 10_000)}, "random data of MNIST's shape"


def seconds(params, data, rule, epochs, repeats, records=1) -> float:
    objective = classification(MLP((784, 64, 10)))

    def once():
        run(objective, params, 0.5, data, epochs=epochs, rule=rule, groups_per_chunk=10**6, records_per_epoch=records)
    once()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=60_000)
    parser.add_argument("--k", type=int, default=8, help="networks in the ensemble (groups of 1 + 3)")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1000, 10000])
    parser.add_argument("--records", type=int, nargs="+", default=[1], help="records per epoch to time")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "minibatch_cost.json"))
    args = parser.parse_args()
    data, source = data_of(args.n_train)
    params = epsilon_ball(initial_conditions(MLP((784, 64, 10)), max(1, args.k // 4)), 3)
    full = seconds(params, data, None, args.epochs, args.repeats)
    rows = []
    print(f"{source}, N = {args.n_train}, K = {args.k}, {args.epochs} epochs, median of {args.repeats}; "
          f"full batch: {full / args.epochs:.3f} s per epoch")
    print(f"{'B':>7} {'steps/epoch':>12} {'records':>8} {'s/epoch':>9} {'x full batch':>13}")
    for b in args.batches:
        rule = UpdateRule(Optimizer("sgd"), batch_size=b)
        for r in args.records:
            if rule.steps_per_epoch(args.n_train) % r:
                print(f"{b:>7}: {r} records do not divide {rule.steps_per_epoch(args.n_train)} steps; skipped")
                continue
            mini = seconds(params, data, rule, args.epochs, args.repeats, r)
            rows.append({"batch_size": b, "steps_per_epoch": rule.steps_per_epoch(args.n_train),
                         "records_per_epoch": r, "seconds_per_epoch": mini / args.epochs,
                         "ratio_to_full_batch": mini / full})
            print(f"{b:>7} {rows[-1]['steps_per_epoch']:>12} {r:>8} {mini / args.epochs:>9.3f} {mini / full:>13.2f}")
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "data": source, "n_train": args.n_train, "k": args.k, "epochs": args.epochs,
              "repeats": args.repeats, "full_batch_seconds_per_epoch": full / args.epochs, "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
