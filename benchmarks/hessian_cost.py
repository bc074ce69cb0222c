"""Cost of sharpness on the paper's workload (MNIST 784-64-10 tanh, float64, full batch).

1. One Hessian-vector product (``jax.linearize`` of the gradient, then the linear map) against one gradient
   (``jax.value_and_grad``), both jit-compiled, median of interleaved repeats: the ratio is what one Lanczos or power
   step costs in gradients.
2. Products Lanczos needs for 1e-6 relative accuracy of the top eigenvalue, at initialisation and after 20 epochs
   of GD at eta = 7.5. Lanczos is incremental, so one run of m_max steps gives the estimate after every m <= m_max:
   the top eigenvalue of the leading m x m block of the tridiagonal matrix. The reference is m_max = 80.

Run:  CHAOSGD_DATA=DATA .venv/bin/python benchmarks/hessian_cost.py
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chaosgd import MLP, classification
from chaosgd.datasets import load
from chaosgd.dynamics import FULL_BATCH_GD
from chaosgd.hessian import hessian_vector_product, lanczos
from chaosgd.precision import whole_process
from chaosgd.sharpness import advance


def main(m_max: int = 80, repeats: int = 5):
    whole_process()  # (this script makes and times JAX arrays of its own: float64, as chaosgd computes)
    data = jax.tree_util.tree_map(jnp.asarray, load("mnist").arrays())
    model = MLP((784, 64, 10))
    objective = classification(model)
    params = model.init(jax.random.PRNGKey(0))
    flat, unravel = ravel_pytree(params)
    v = jnp.asarray(np.random.default_rng(0).standard_normal(flat.size))

    grad = jax.jit(jax.value_and_grad(lambda p: objective.loss(p, data)[0]))
    hvp = jax.jit(lambda f, v: hessian_vector_product(objective, unravel(f), data)[1](v))
    jax.block_until_ready(grad(params))
    jax.block_until_ready(hvp(flat, v))
    g_times, h_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(grad(params))
        g_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(hvp(flat, v))
        h_times.append(time.perf_counter() - start)
    g, h = statistics.median(g_times), statistics.median(h_times)
    print(f"gradient {g:.3f} s, Hessian-vector product {h:.3f} s: ratio {h / g:.2f}")

    results = {"gradient_s": g, "hvp_s": h, "ratio": h / g, "lanczos": {}}
    n_train = data["x_train"].shape[0]
    trained, _ = advance((objective, FULL_BATCH_GD, n_train, 0), params, FULL_BATCH_GD.optimizer.init(params),
                          jnp.float64(7.5), data, jnp.int32(0), jnp.int32(0), 20)
    for name, point in (("initialisation", params), ("after 20 epochs at eta=7.5", trained)):
        f, _ = ravel_pytree(point)
        alpha, beta, _ = jax.jit(lambda f, v: lanczos(hessian_vector_product(objective, unravel(f), data)[1], v,
                                                      m_max))(f, v)
        alpha, beta = np.asarray(alpha), np.asarray(beta)
        top = []
        for m in range(1, m_max + 1):
            tri = np.diag(alpha[:m]) + np.diag(beta[:m - 1], 1) + np.diag(beta[:m - 1], -1)
            top.append(np.linalg.eigvalsh(tri)[-1])
        top = np.array(top)
        error = np.abs(top - top[-1]) / abs(top[-1])
        needed = int(np.argmax(error < 1e-6)) + 1
        print(f"{name}: top eigenvalue {top[-1]:.6g}; Lanczos reaches 1e-6 relative accuracy after {needed} products"
              f" (1e-3 after {int(np.argmax(error < 1e-3)) + 1})")
        results["lanczos"][name] = {"top_eigenvalue": float(top[-1]), "products_for_1e-6": needed,
                                    "products_for_1e-3": int(np.argmax(error < 1e-3)) + 1,
                                    "relative_error_by_m": error.tolist()}
    out = Path(__file__).with_name("results") / "hessian_cost.json"
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
