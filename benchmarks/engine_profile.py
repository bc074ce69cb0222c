"""Where an engine epoch's time goes: a ``jax.profiler`` trace of ``chaosgd.run`` on the paper's workload (MNIST
784-64-10 tanh, float64, full batch, K networks in groups of 1 + 3), summed per compiled operation over the epochs
of the scan and printed per epoch, largest first. The run's last call (the final forward pass that records theta(T))
is left out, as it is spread over 201 epochs in a real run.

Run:  CHAOSGD_DATA=DATA .venv/bin/python benchmarks/engine_profile.py [--k 8] [--epochs 3]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.datasets import load
from chaosgd.precision import whole_process


def main() -> None:
    whole_process()  # (this script makes and times JAX arrays of its own: float64, as chaosgd computes)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8, help="networks (a multiple of 4)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    data = jax.tree_util.tree_map(jnp.asarray, load("mnist").arrays())
    model = MLP((784, 64, 10))
    params = epsilon_ball(initial_conditions(model, args.k // 4), 3, epsilon=1e-8)

    def train():
        run(classification(model), params, 1.0, data, epochs=args.epochs, groups_per_chunk=args.k // 4)
    train()  # compile
    folder = tempfile.mkdtemp(prefix="chaosgd-profile-")
    with jax.profiler.trace(folder, create_perfetto_trace=True):
        start = time.perf_counter()
        train()
        wall = time.perf_counter() - start
    trace = json.load(gzip.open(next(Path(folder).rglob("*.trace.json.gz"))))
    names = {e["pid"]: e["args"].get("name", "") for e in trace["traceEvents"]
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    ops = [e for e in trace["traceEvents"] if e.get("ph") == "X" and "hlo_op" in e.get("args", {})]
    # On a GPU the kernels appear under the device's process (without run ids); on a CPU under the host's.
    device = [e for e in ops if "gpu" in names.get(e["pid"], "").lower()]
    ops = device or ops
    runs = sorted({e["args"].get("run_id") for e in ops}, key=lambda r: min(e["ts"] for e in ops
                                                                             if e["args"].get("run_id") == r))
    # The last program run is the final pass (where run ids tell the programs apart).
    scan = [e for e in ops if e["args"].get("run_id") != runs[-1]] if len(runs) > 1 else ops
    total = collections.Counter()
    for e in scan:
        total[e["args"]["hlo_op"]] += e["dur"] / 1000 / args.epochs
    where = "device kernels" if device else "operations in the scan"
    print(f"K = {args.k} on {jax.default_backend()}: {where} of one epoch, ms (sum {sum(total.values()):.1f}; "
          f"wall time of the profiled run {1000 * wall / args.epochs:.1f} per epoch, final pass and profiler "
          "included; operations on XLA's CPU threads may overlap)")
    for name, ms in total.most_common(args.top):
        print(f"{ms:8.2f}  {name}")

if __name__ == "__main__":
    main()
