"""Same numbers on a GPU as on the CPU: one small MNIST ensemble trained on both, in one process, and compared.

Workload: MNIST 784-64-10 tanh, float64, full batch, 2 initial conditions x (1 + 3) copies, eps = 1e-8, at a calm
learning rate (eta = 0.01, where trajectories do not separate, so the two devices should agree to roundoff over the
whole run) and a chaotic one (eta = 10, where any rounding difference grows like the perturbations themselves, so
the trajectories agree only at first, while the local exponents, a statistical property, agree closely).

Run on a machine whose JAX has a GPU backend:
    CHAOSGD_DATA=<folder holding mnist/> python benchmarks/gpu_agreement.py --out gpu_agreement.json
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, local_exponent, run
from chaosgd.datasets import load


def train(device, eta, epochs, model, dataset):
    with jax.default_device(device):
        ball = epsilon_ball(initial_conditions(model, 2), 3, epsilon=1e-8)
        start = time.perf_counter()
        records = run(classification(model), ball, eta, dataset.arrays(), epochs=epochs)
        return records, time.perf_counter() - start


def relative_difference(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calm-epochs", type=int, default=30)
    parser.add_argument("--chaotic-epochs", type=int, default=100)
    parser.add_argument("--out", default="gpu_agreement.json")
    parser.add_argument("--cpu-only", action="store_true", help="compare the CPU with itself (to check this script)")
    args = parser.parse_args()

    gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
    if gpu.platform == "cpu" and not args.cpu_only:
        raise SystemExit("no GPU backend in this JAX: nothing to compare")
    dataset = load("mnist")
    model = MLP((784, 64, 10))
    result = {"gpu": str(gpu.device_kind), "jax": jax.__version__}

    calm_gpu, s_gpu = train(gpu, 0.01, args.calm_epochs, model, dataset)
    calm_cpu, s_cpu = train(cpu, 0.01, args.calm_epochs, model, dataset)
    result["calm"] = {"eta": 0.01, "epochs": args.calm_epochs, "seconds_gpu": s_gpu, "seconds_cpu": s_cpu,
                      "loss_max_rel_diff": relative_difference(calm_gpu.loss, calm_cpu.loss),
                      "distance_max_rel_diff": relative_difference(calm_gpu.distance, calm_cpu.distance),
                      "test_accuracy_equal": bool(np.array_equal(calm_gpu.test_accuracy, calm_cpu.test_accuracy))}

    chaos_gpu, s_gpu = train(gpu, 10.0, args.chaotic_epochs, model, dataset)
    chaos_cpu, s_cpu = train(cpu, 10.0, args.chaotic_epochs, model, dataset)
    per_epoch = np.max(np.abs(chaos_gpu.loss[:, 0] - chaos_cpu.loss[:, 0]) / np.abs(chaos_cpu.loss[:, 0]), axis=0)
    fits = [(local_exponent(g), local_exponent(c)) for g, c in zip(chaos_gpu.distance, chaos_cpu.distance)]
    result["chaotic"] = {
        "eta": 10.0, "epochs": args.chaotic_epochs, "seconds_gpu": s_gpu, "seconds_cpu": s_cpu,
        "reference_loss_rel_diff_at_epochs_0_5_10_20_40": [float(per_epoch[t]) for t in (0, 5, 10, 20, 40)
                                                          if t < per_epoch.size],
        "local_exponents_gpu": [f[0].exponent for f in fits], "local_exponents_cpu": [f[1].exponent for f in fits],
        "windows_gpu": [[f[0].start, f[0].stop] for f in fits], "windows_cpu": [[f[1].start, f[1].stop] for f in fits],
        "positive_gpu": [f[0].positive for f in fits], "positive_cpu": [f[1].positive for f in fits]}
    print(json.dumps(result, indent=2))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
