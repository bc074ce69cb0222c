"""Engine throughput on the paper's workload, as a fraction of this machine's own matrix-multiply limit.

Workload: MNIST 784-64-10 tanh, float64, full batch (60,000 examples), cross-entropy, per-epoch records on.
For ensembles of K = 1 .. 32 networks it measures network-epochs per second of

  - the engine (``chaosgd.run``: all K in one compiled scan), and
  - a plain one-network-at-a-time loop (a jit-compiled single-network step called per network per epoch, the way
    the paper's PyTorch code trains),

and, in the same run, the float64 rate of the two matrix products that dominate one network-epoch, at the same
shapes the engine sees for K networks: ``X (60000x784) @ W (784 x 64K)`` and ``X^T @ G (60000 x 64K)``, with numpy
(OpenBLAS, into result buffers allocated once, as the engine's compiled loop reuses its own) and with JAX (XLA's
product). The faster of the two is the limit. Median of ``--repeats`` timings each. On a GPU backend only XLA's
products (cuBLAS) are timed. The engine's products run on OpenBLAS through ``chaosgd.gemm`` on CPU;
``CHAOSGD_GEMM=xla`` times it with XLA's product instead (the route is saved with the results).

Run:  CHAOSGD_DATA=DATA .venv/bin/python benchmarks/engine_throughput.py [--ks 1 2 4 8 16 32]
(on machines where OPENBLAS_CORETYPE is set, unset it and OPENBLAS_L2_SIZE for this command so numpy's GEMM runs at
its best: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import chaosgd
from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.datasets import load
from chaosgd.dynamics import FULL_BATCH_GD, member_epoch
from chaosgd.gemm import route_in_use
from chaosgd.precision import whole_process

N, D, H, C = 60_000, 784, 64, 10
GEMM_FLOP = 2 * 2 * N * D * H  # forward X@W1 and weight gradient X^T@G, per network
NETWORK_EPOCH_FLOP = GEMM_FLOP + 3 * 2 * N * H * C  # plus the small hidden-to-output products


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_seconds(k, x_np, repeats):
    """Seconds for the two dominant products of K networks, best of numpy and XLA."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((D, H * k))
    g = rng.standard_normal((N, H * k))
    if jax.default_backend() == "cpu":
        # Into buffers allocated once, as the engine's compiled loop reuses its own: a fresh 60,000 x 64K result
        # each call costs numpy page faults that are not the product's.
        forward, gradient = np.empty((N, H * k)), np.empty((D, H * k))
        np.matmul(x_np, w, out=forward)  # warm-up

        def products():
            np.matmul(x_np, w, out=forward)
            np.matmul(x_np.T, g, out=gradient)
        numpy_s = median_time(products, repeats)
    else:  # on an accelerator the host's BLAS is not the limit
        numpy_s = float("inf")
    x_j, w_j, g_j = jnp.asarray(x_np), jnp.asarray(w), jnp.asarray(g)
    # einsum contracts over X's first axis in place; a literal x.T @ g would first copy X transposed.
    both = jax.jit(lambda x, w, g: (jnp.einsum("nd,dh->nh", x, w), jnp.einsum("nd,nh->dh", x, g)))
    jax.block_until_ready(both(x_j, w_j, g_j))
    jax_s = median_time(lambda: jax.block_until_ready(both(x_j, w_j, g_j)), repeats)
    return numpy_s, jax_s


def members(k):
    """K networks as groups of one reference and its perturbed copies: 4 members a group (1 + 3) from K = 4 on."""
    per_group = min(k, 4)
    return k // per_group, per_group - 1


def engine_runner(k, model, data, epochs):
    n_groups, n_copies = members(k)
    params = epsilon_ball(initial_conditions(model, n_groups), n_copies, epsilon=1e-8)
    objective = classification(model)

    def train():
        run(objective, params, 1.0, data, epochs=epochs, groups_per_chunk=n_groups)
    train()  # compile
    return train


def loop_runner(k, model, data, epochs):
    """The same records, one network at a time: each reference's trajectory is kept, then each copy is trained and
    its L1 distance to the reference taken epoch by epoch (the paper's public code works this way)."""
    n_groups, n_copies = members(k)
    objective = classification(model)
    epoch = member_epoch(objective, FULL_BATCH_GD, 0, 0)

    @jax.jit
    def step(net, eta, data):  # one GD step of one network: (new parameters, loss, accuracy)
        new, _, loss, acc = epoch(net, (), eta, data, 0, 0, 0)
        return new, loss, acc
    test_accuracy = jax.jit(objective.test_accuracy)
    l1 = jax.jit(lambda a, b: sum(jnp.abs(x - y).sum() for x, y in zip(jax.tree_util.tree_leaves(a),
                                                                        jax.tree_util.tree_leaves(b))))
    ball = epsilon_ball(initial_conditions(model, n_groups), n_copies, epsilon=1e-8)
    eta = jnp.float64(1.0)

    def train():
        for g in range(n_groups):
            net = jax.tree_util.tree_map(lambda x: jnp.asarray(x[g, 0]), ball)
            trajectory = [net]
            for _ in range(epochs):
                net, loss, acc = step(net, eta, data)
                float(loss), float(acc), float(test_accuracy(net, data))
                trajectory.append(net)
            for j in range(1, 1 + n_copies):
                net = jax.tree_util.tree_map(lambda x: jnp.asarray(x[g, j]), ball)
                for t in range(epochs):
                    net, loss, acc = step(net, eta, data)
                    float(loss), float(l1(net, trajectory[t + 1]))
    jax.block_until_ready(step(jax.tree_util.tree_map(lambda x: jnp.asarray(x[0, 0]), ball), eta, data))
    return train


def main():
    whole_process()  # (this script makes and times JAX arrays of its own: float64, as chaosgd computes)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--epochs", type=int, default=30, help="epochs per timing: the final forward pass that "
                        "records theta(T) (half an epoch's products) is amortised over them as over the 201 of a real "
                        "run; it adds about 1/(2 epochs) to the time of each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-ks", type=int, nargs="+", default=[1, 8, 32], help="K values for the plain loop")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "engine_throughput.json"))
    args = parser.parse_args()

    dataset = load("mnist")
    data = jax.tree_util.tree_map(jnp.asarray, dataset.arrays())
    x_np = np.ascontiguousarray(dataset.x_train.reshape(N, D))
    model = MLP((D, H, C))
    rows = []
    for k in args.ks:
        engine = engine_runner(k, model, data, args.epochs)
        loop = loop_runner(k, model, data, args.epochs) if k in args.loop_ks else None
        timings = {"numpy": [], "xla": [], "engine": [], "loop": []}
        for _ in range(args.repeats):  # interleaved, so that a noisy neighbour hits all of them alike
            numpy_s, jax_s = gemm_seconds(k, x_np, 1)
            timings["numpy"].append(numpy_s)
            timings["xla"].append(jax_s)
            timings["engine"].append(median_time(engine, 1))
            if loop is not None:
                timings["loop"].append(median_time(loop, 1))
        med = {name: statistics.median(t) if t else None for name, t in timings.items()}
        net_epochs = k * args.epochs
        limit = min(med["numpy"], med["xla"]) / k * NETWORK_EPOCH_FLOP / GEMM_FLOP  # s per network-epoch
        engine_s = med["engine"] / net_epochs
        loop_s = None if med["loop"] is None else med["loop"] / net_epochs
        row = {"K": k, "groups": members(k)[0], "copies_per_group": members(k)[1],
               "gemm_gflops_numpy": GEMM_FLOP * k / med["numpy"] / 1e9,
               "gemm_gflops_jax": GEMM_FLOP * k / med["xla"] / 1e9,
               "limit_s_per_net_epoch": limit, "engine_s_per_net_epoch": engine_s,
               "engine_net_epochs_per_s": 1 / engine_s, "engine_gflops": NETWORK_EPOCH_FLOP / engine_s / 1e9,
               "fraction_of_limit": limit / engine_s,
               "loop_s_per_net_epoch": loop_s,
               "engine_speedup_over_loop": None if loop_s is None else loop_s / engine_s}
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print("| K | engine net-epochs/s | engine GFLOP/s | GEMM limit GFLOP/s (numpy / XLA) | engine / limit "
          "| loop net-epochs/s | engine / loop |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        loop = ("| |" if r["loop_s_per_net_epoch"] is None else
                f"| {1 / r['loop_s_per_net_epoch']:.2f} | {r['engine_speedup_over_loop']:.2f}x |")
        print(f"| {r['K']} | {r['engine_net_epochs_per_s']:.2f} | {r['engine_gflops']:.0f} | "
              f"{r['gemm_gflops_numpy']:.0f} / {r['gemm_gflops_jax']:.0f} | {r['fraction_of_limit']:.0%} {loop}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                               "backend": jax.default_backend(), "jax": jax.__version__, "chaosgd": chaosgd.__version__,
                               "gemm_route": route_in_use(),
                               "epochs": args.epochs, "repeats": args.repeats, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
