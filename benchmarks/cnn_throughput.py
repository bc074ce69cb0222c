"""The paper's CNN (figure 12) in the engine, as a fraction of this machine's own limit for its matrix products.

Workload: MNIST (10,000 training images; the test set's 10,000 for the references' accuracy), the CNN of 9,098
parameters (conv 8 and conv 16 of 3 x 3, ReLU, 2 x 2 max pooling, dense 784 -> 10), float64, full batch, groups of
a reference and 3 copies, per-epoch records on, under memory budgets (2 GiB, the goal for one group on 10,000
images, and 8 GiB): the engine computes the gradient over chunks of examples that fit.

In the same run it times, with numpy (OpenBLAS, into result buffers allocated once, each product in whichever of
its two layouts C = A B or C^T = B^T A^T is faster), every matrix product a network-epoch needs at the engine's
shapes — the convolutions as products over unfolded patches, forward and both gradients, the dense layer, and the
references' forward pass over the test set — for one chunk of examples, times the chunks. That sum is the limit;
the engine's rate is quoted as a fraction of it. ``--before`` also times the CNN as chaosgd computed it up to 0.8.0
(XLA's float64 convolution and reduce_window, whole batch) on 1,000 images, scaled per image. ``--profile`` traces
one run and sums the time of its operations by kind (products, convolutions pooled in one kernel, unfolding,
pooling, derivatives read at the pooling's maxima, the rest). ``--torch`` also times the same network written as a
torch module (Conv2d, ReLU, MaxPool2d, Linear; and in the functional style, F.relu and F.max_pool2d in a forward
method) and translated by ``from_torch`` (torch's own initialisation), at the first memory budget, in turn with
chaosgd's CNN (pairs of runs: their ratio): the route a user's own convolutional module takes.

Run:  CHAOSGD_DATA=DATA env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/cnn_throughput.py
      [--budgets-gib 2 8] [--epochs 4] [--repeats 3] [--before] [--profile] [--torch]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import chaosgd
from chaosgd import CNN, classification, epsilon_ball, initial_conditions, run
from chaosgd.engine import fit_examples
from chaosgd.gemm import route_in_use
from chaosgd.models.base import FunctionModel
from chaosgd.precision import whole_process
from engine_throughput import median_time  # (run as a script: benchmarks/ is on the path)

N_TRAIN = N_TEST = 10_000
COPIES = 3


def mnist():
    """10,000 training and test images: real MNIST from $CHAOSGD_DATA when there, else random ones of its shape
    (speed does not depend on the values)."""
    from chaosgd.datasets import load
    try:
        arrays = load("mnist").arrays()
        source = "MNIST"
    except Exception:  # no MNIST here
        rng = np.random.default_rng(0)
        arrays = {"x_train": rng.random((N_TRAIN, 784)), "y_train": rng.integers(0, 10, N_TRAIN).astype(np.int32),
                  "x_test": rng.random((N_TEST, 784)), "y_test": rng.integers(0, 10, N_TEST).astype(np.int32)}
        source = "random images of MNIST's shape"
    return {key: jnp.asarray(value[:N_TRAIN if "train" in key else N_TEST]) for key, value in arrays.items()}, source


def products(k: int, refs: int, chunk: int):
    """(A shape, B shape, count) of every product of one chunk of `chunk` examples for k networks of which `refs`
    are references, as the engine computes them (an ensemble's kernels against the data side by side; networks
    with their own input one product each)."""
    l1, l2 = chunk * 28 * 28, chunk * 14 * 14
    train = [((8 * k, 9), (9, l1), 1),           # first convolution, all kernels against the data's patches
             ((8 * k, l1), (l1, 9), 1),          # its kernels' gradient
             ((16, 72), (72, l2), k),            # second convolution, per network
             ((16, l2), (l2, 72), k),            # its kernels' gradient
             ((72, 16), (16, l2), k),            # its input's gradient (folded back)
             ((chunk, 784), (784, 10), k),       # dense layer, its weights' and its input's gradients
             ((784, chunk), (chunk, 10), k),
             ((chunk, 10), (10, 784), k)]
    test = [((8 * refs, 9), (9, l1), 1), ((16, 72), (72, l2), refs), ((chunk, 784), (784, 10), refs)]
    return train, test


def flop(shapes) -> float:
    return float(sum(2 * a[0] * a[1] * b[1] * count for a, b, count in shapes))


def limit_seconds(shapes, repeats: int) -> float:
    """Seconds of numpy for these products, each in its faster layout, into buffers allocated once."""
    rng = np.random.default_rng(0)
    total = 0.0
    for a_shape, b_shape, count in shapes:
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
        at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
        out, out_t = np.empty((a_shape[0], b_shape[1])), np.empty((b_shape[1], a_shape[0]))
        np.matmul(a, b, out=out), np.matmul(bt, at, out=out_t)  # warm-up
        best = min(median_time(lambda: np.matmul(a, b, out=out), repeats),
                   median_time(lambda: np.matmul(bt, at, out=out_t), repeats))
        total += best * count
    return total


def trainer(model, data, groups, epochs, budget):
    """One run of the engine on ``model``, compiled: call it to time it."""
    params = epsilon_ball(initial_conditions(model, groups), COPIES, epsilon=1e-8)
    objective = classification(model)
    train = lambda: run(objective, params, 1.0, data, epochs=epochs, memory_budget=budget)  # noqa: E731
    train()  # compiles
    return train


def engine_seconds(model, data, groups, epochs, repeats, budget):
    return median_time(trainer(model, data, groups, epochs, budget), repeats) / (groups * (1 + COPIES) * epochs)


def paired_seconds(first, second, repeats) -> tuple[float, float, float]:
    """Two compiled runs timed in turn, ``repeats`` pairs (the machine's speed drifts between rows: a ratio only
    holds within a pair): the median time of each and the median of the pairs' ratios first / second."""
    pairs = []
    for _ in range(repeats):
        pairs.append([median_time(run, 1) for run in (first, second)])
    a, b = np.array(pairs).T
    return float(np.median(a)), float(np.median(b)), float(np.median(a / b))


def xla_cnn(model):
    """The CNN as chaosgd computed it up to 0.8.0: XLA's convolution and reduce_window, NHWC."""
    from jax import lax

    def apply(params, x):
        h = x.reshape((x.shape[0], *model.input_shape))
        for layer in params[:-1]:
            h = lax.conv_general_dilated(h, layer["w"], (1, 1), ((1, 1), (1, 1)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = lax.reduce_window(jax.nn.relu(h + layer["b"]), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                  "VALID")
        return h.reshape(h.shape[0], -1) @ params[-1]["w"] + params[-1]["b"]
    return FunctionModel(model.init, apply)


def torch_cnn(functional: bool = False):
    """The paper's CNN as a torch module, translated (the route of a user's own convolutional network): layers in
    an nn.Sequential, or (``functional``) called in a forward method with F.relu and F.max_pool2d, the style of
    PyTorch's own MNIST example."""
    import torch
    import torch.nn.functional as F

    from chaosgd.models import from_torch

    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Conv2d(8, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16 * 7 * 7, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    net = Functional() if functional else torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 10))
    assert sum(p.numel() for p in net.parameters()) == 9098
    return from_torch(net, np.zeros((8, 1, 28, 28)))


def profile(model, data, budget, epochs) -> dict:
    """Seconds per network-epoch by kind of operation, from a jax.profiler trace of one run of one group."""
    params = epsilon_ball(initial_conditions(model, 1), COPIES, epsilon=1e-8)
    objective = classification(model)
    run(objective, params, 1.0, data, epochs=epochs, memory_budget=budget)
    folder = tempfile.mkdtemp()
    with jax.profiler.trace(folder):
        run(objective, params, 1.0, data, epochs=epochs, memory_budget=budget)
    trace = json.load(gzip.open(next(Path(folder).rglob("*.trace.json.gz"))))
    kinds = collections.Counter()
    for event in trace["traceEvents"]:
        if event.get("ph") != "X" or "hlo_op" not in event.get("args", {}) or event["name"].startswith("while"):
            continue
        name = event["name"]
        kind = ("products (BLAS)" if name.startswith("chaosgd_gemm") else
                "3 x 3 convolutions and their pooling in one (both layers)" if name.startswith("chaosgd_conv_pool") else
                "unfolding and folding" if name.startswith(("chaosgd_patches", "chaosgd_fold")) else
                "derivatives at the maxima (kernels', input's)" if name.startswith("chaosgd_pooled_conv") else
                "max pooling" if name.startswith("chaosgd_pool") else "the rest (XLA: ReLU, bias, softmax, ...)")
        kinds[kind] += event["dur"] / 1e6 / ((1 + COPIES) * epochs)
    return dict(kinds)


def main() -> None:
    whole_process()  # (this script makes and times JAX arrays of its own: float64, as chaosgd computes)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets-gib", type=float, nargs="+", default=[2.0, 8.0],
                        help="memory budgets to run one group under (its chunks of examples follow)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/cnn_throughput.json")
    args = parser.parse_args()

    data, source = mnist()
    model, groups = CNN(), 1
    k = groups * (1 + COPIES)
    one = jax.tree_util.tree_map(lambda x: x[0, 0], epsilon_ball(initial_conditions(model, 1), COPIES))
    rows = []
    for budget in (gib * 2**30 for gib in args.budgets_gib):
        chunk = fit_examples(classification(model), one, data, 1 + COPIES, budget) or N_TRAIN
        seconds = engine_seconds(model, data, groups, args.epochs, args.repeats, budget)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        train, test = products(k, groups, chunk)
        chunks = -(-N_TRAIN // chunk)
        limit = limit_seconds(train + test, args.repeats) * chunks / k  # per network-epoch
        useful = (flop(train) + flop(test)) * chunks / k
        rows.append({"memory_budget_gib": budget / 2**30, "networks": k, "examples_per_chunk": chunk,
                     "engine_network_epochs_per_s": 1 / seconds, "engine_gflops": useful / seconds / 1e9,
                     "limit_gflops": useful / limit / 1e9, "engine_over_limit": limit / seconds,
                     "peak_rss_gib_after_engine": peak / 2**30})
        print(f"K = {k:3d} (chunks of {chunk} examples): {1 / seconds:.3f} network-epochs/s, "
              f"{useful / seconds / 1e9:.1f} GFLOP/s; limit {useful / limit / 1e9:.1f} GFLOP/s; "
              f"engine / limit {limit / seconds:.0%}; peak memory so far {peak / 2**30:.2f} GiB", flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "jax": jax.__version__, "chaosgd": chaosgd.__version__, "data": source,
              "route": route_in_use(), "epochs": args.epochs, "repeats": args.repeats,
              "network_epoch_gflop": useful / 1e9, "rows": rows}
    if args.before:
        small = {key: value[:1000] for key, value in data.items()}
        seconds = engine_seconds(xla_cnn(model), small, 1, 2, 1, 64 * 2**30)
        now = engine_seconds(model, small, 1, 2, 1, 64 * 2**30)
        result["before_1000_images"] = {"xla_convolution_s_per_network_epoch": seconds,
                                        "now_s_per_network_epoch": now, "speedup": seconds / now}
        print(f"1,000 images, one group: XLA's convolutions {seconds:.2f} s a network-epoch, now {now:.3f} s "
              f"({seconds / now:.1f}x)", flush=True)
    for functional in [False, True] if args.torch else []:
        budget = args.budgets_gib[0] * 2**30
        translated = torch_cnn(functional)
        one_torch = jax.tree_util.tree_map(lambda x: x[0, 0], epsilon_ball(initial_conditions(translated, 1), COPIES))
        chunk = fit_examples(classification(translated), one_torch, data, 1 + COPIES, budget) or N_TRAIN
        native, seconds, ratio = paired_seconds(trainer(model, data, groups, args.epochs, budget),
                                                trainer(translated, data, groups, args.epochs, budget), args.repeats)
        native, seconds = native / (k * args.epochs), seconds / (k * args.epochs)
        style = "torch_functional" if functional else "torch_module"
        result[style] = {"memory_budget_gib": args.budgets_gib[0], "examples_per_chunk": chunk,
                         "engine_network_epochs_per_s": 1 / seconds, "chaosgd_cnn_network_epochs_per_s": 1 / native,
                         "over_chaosgd_cnn": ratio}
        print(f"the same network as a torch module{' (F.relu, F.max_pool2d)' if functional else ''} (from_torch), "
              f"{args.budgets_gib[0]:g} GiB: chunks of {chunk} examples, {1 / seconds:.3f} network-epochs/s, "
              f"{ratio:.0%} of chaosgd's CNN timed in turn with it ({1 / native:.3f})", flush=True)
    if args.profile:
        result["profile_s_per_network_epoch"] = profile(model, data, args.budgets_gib[0] * 2**30, 2)
        print("where a network-epoch's time goes (s):", {k: round(v, 3) for k, v in
                                                         result["profile_s_per_network_epoch"].items()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
