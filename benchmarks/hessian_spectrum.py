"""The Hessian spectrum on the paper's network (MNIST 784-64-10 tanh, float64, the first 10,000 training images).

1. Cost of one Hessian-vector product (``hessian.hessian_vector_product``) against one gradient
   (``jax.value_and_grad``), both jit-compiled: median of interleaved repeats.
2. Top-20 eigenvalues at initialisation and after E epochs of full-batch GD at eta = 7.5 (the engine's own epoch
   map): one Lanczos run of ``m_ref`` steps (``hessian.lanczos``, the loop behind ``spectrum.top_k``) gives the
   Ritz values after every m <= m_ref (those of T's leading m x m block). The reference is the top 20 at m_ref,
   checked by their residual bounds and by matfree's independent Lanczos (``decomp.tridiag_sym``, full
   re-orthogonalisation) from another start. Reported: the smallest m from which all 20 stay within 1e-6
   relative of the reference, i.e. Hessian-vector products for the whole top-20, and per eigenvalue (m / 20).
   Trace (Hutch++ and Hutchinson, 60 products each) and SLQ (4 probes x 80 steps) at the same points.
3. Against PyHessian (Yao et al. 2020, arXiv:1912.07145) on the same torch model with the same weights: on Iris
   4-10-3 with the exact Hessian (``torch.autograd.functional.hessian`` + ``torch.linalg.eigvalsh``) as the
   referee, and on 784-64-10 with the first 2,000 MNIST images.

Needs the ``spectrum`` extra (matfree, PyHessian, torch: ``pip install -e '.[spectrum]'``).

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE CHAOSGD_DATA=/work/shared/data \
      .venv/bin/python benchmarks/hessian_spectrum.py      (writes benchmarks/results/hessian_spectrum.json)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from scipy.linalg import eigh_tridiagonal

from chaosgd import MLP, classification
from chaosgd.datasets import load, load_iris
from chaosgd.dynamics import FULL_BATCH_GD
from chaosgd.hessian import hessian_vector_product, lanczos, ritz
from chaosgd.precision import whole_process
from chaosgd.sharpness import advance
from chaosgd.spectrum import density, density_moments, top_k, trace

K = 20
TOLERANCE = 1e-6
ETA = 7.5


def first(arrays, n):
    return dict(arrays, x_train=arrays["x_train"][:n], y_train=arrays["y_train"][:n])


def cost(objective, params, data, repeats):
    flat, unravel = ravel_pytree(params)
    v = jnp.asarray(np.random.default_rng(0).standard_normal(flat.size))
    grad = jax.jit(jax.value_and_grad(lambda p, d: objective.loss(p, d)[0]))
    hvp = jax.jit(lambda f, v, d: hessian_vector_product(objective, unravel(f), d)[1](v))
    jax.block_until_ready(grad(params, data))
    jax.block_until_ready(hvp(flat, v, data))
    g_times, h_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(grad(params, data))
        g_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(hvp(flat, v, data))
        h_times.append(time.perf_counter() - start)
    g, h = statistics.median(g_times), statistics.median(h_times)
    print(f"gradient {g:.4f} s, Hessian-vector product {h:.4f} s (medians of {repeats}): ratio {h / g:.2f}")
    return {"gradient_s": g, "hvp_s": h, "ratio": h / g, "repeats": repeats}


def convergence(objective, params, data, m_ref):
    """Ritz values of the top K after every m, from one run; the m from which all K stay within TOLERANCE."""
    flat, unravel = ravel_pytree(params)
    start = jnp.asarray(np.random.default_rng(1).standard_normal(flat.size))
    run = jax.jit(lambda f, s, d: lanczos(hessian_vector_product(objective, unravel(f), d)[1], s, m_ref)[:2])
    t0 = time.perf_counter()
    alpha, beta = (np.asarray(x) for x in jax.block_until_ready(run(flat, start, data)))
    seconds = time.perf_counter() - t0
    reference, _, bounds = ritz(alpha, beta)
    reference, bounds = reference[::-1][:K], bounds[::-1][:K]
    worst = []
    for m in range(K, m_ref + 1):
        top = eigh_tridiagonal(alpha[:m], beta[:m - 1], eigvals_only=True, select="i",
                               select_range=(m - K, m - 1))[::-1]
        worst.append(np.max(np.abs(top - reference) / np.abs(reference)))
    worst = np.array(worst)
    bad = np.nonzero(worst >= TOLERANCE)[0]
    needed = int(K + (bad[-1] + 1 if bad.size else 0))
    per_value = []  # m from which eigenvalue i stays converged
    for i in range(K):
        errs = []
        for m in range(K, m_ref + 1):
            top = eigh_tridiagonal(alpha[:m], beta[:m - 1], eigvals_only=True, select="i",
                                   select_range=(m - 1 - i, m - 1 - i))[0]
            errs.append(abs(top - reference[i]) / abs(reference[i]))
        bad_i = np.nonzero(np.array(errs) >= TOLERANCE)[0]
        per_value.append(int(K + (bad_i[-1] + 1 if bad_i.size else 0)))
    return {"reference_m": m_ref, "reference_seconds": seconds, "top_values": reference.tolist(),
            "reference_residual_bounds": bounds.tolist(),
            "max_relative_residual_bound": float(np.max(bounds / np.abs(reference))),
            "products_all_top20_within_1e-6": needed, "products_per_eigenvalue": needed / K,
            "products_each_eigenvalue_converged": per_value,
            "worst_relative_error_by_m": dict(zip(range(K, m_ref + 1), worst.tolist()))}


def matfree_check(objective, params, data, m, reference):
    """matfree's own Lanczos (full re-orthogonalisation) from another start: its top K against ours."""
    from matfree import decomp

    flat, unravel = ravel_pytree(params)
    start = jnp.asarray(np.random.default_rng(2).standard_normal(flat.size))
    start = start / jnp.linalg.norm(start)

    @jax.jit
    def run(f, v, d):
        hvp = hessian_vector_product(objective, unravel(f), d)[1]
        return decomp.tridiag_sym(m, reortho="full", materialize=True)(lambda x: hvp(x), v).J_small

    tri = np.asarray(run(flat, start, data))
    top = np.linalg.eigvalsh(tri)[::-1][:K]
    return {"matfree_steps": m, "max_relative_difference": float(np.max(np.abs(top - reference) / np.abs(reference)))}


def stochastic(objective, params, data):
    out = {}
    for method in ("hutch++", "hutchinson"):
        t = trace(objective, params, data, method=method, products=60)
        out[method] = {"estimate": float(t.estimate), "stderr": float(t.stderr), "products": t.products}
    slq = density(objective, params, data, steps=80, probes=4)
    (m0, m1, m2), (_, s1, s2) = density_moments(slq, [0, 1, 2])
    out["slq"] = {"steps": 80, "probes": 4, "trace": float(m1 * slq.size), "trace_stderr": float(s1 * slq.size),
                  "moment_2": float(m2), "moment_2_stderr": float(s2), "node_min": float(slq.nodes.min()),
                  "node_max": float(slq.nodes.max())}
    slq = out["slq"]
    print("  trace: " + ", ".join(f"{k} {v['estimate']:.6g} ± {v['stderr']:.2g}" for k, v in out.items()
                                  if k != "slq") + f", SLQ {slq['trace']:.6g} ± {slq['trace_stderr']:.2g}")
    return out


def torch_comparison(params, data, iterations):
    """PyHessian and the exact torch Hessian against chaosgd on one torch model with the same weights."""
    import torch
    from pyhessian import hessian as pyhessian

    torch.set_default_dtype(torch.float64)  # PyHessian draws its random vectors in the default dtype
    torch.manual_seed(0)
    layers = []
    for i, layer in enumerate(params):
        linear = torch.nn.Linear(*np.asarray(layer["w"]).shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.asarray(layer["w"]).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(layer["b"]).copy()))
        layers += [linear] + ([torch.nn.Tanh()] if i < len(params) - 1 else [])
    model = torch.nn.Sequential(*layers)
    x = torch.from_numpy(np.asarray(data["x_train"]).reshape(len(data["x_train"]), -1))
    y = torch.from_numpy(np.asarray(data["y_train"]).astype(np.int64))
    criterion = torch.nn.CrossEntropyLoss()
    n_top = 3
    t0 = time.perf_counter()
    engine = pyhessian(model, criterion, data=(x, y), cuda=False)
    values, _ = engine.eigenvalues(maxIter=iterations, tol=1e-10, top_n=n_top)
    traces = engine.trace(maxIter=200, tol=1e-12)
    py_seconds = time.perf_counter() - t0
    objective = classification(MLP(tuple([params[0]["w"].shape[0]] + [layer["w"].shape[1] for layer in params])))
    ours = top_k(objective, params, data, n_top, iterations=min(100, ravel_pytree(params)[0].size))
    ours_trace = trace(objective, params, data, products=60)
    # Power iteration finds the eigenvalues largest in magnitude (a negative one too): compare those with the
    # Ritz values of both ends of the spectrum that Lanczos has converged (residual bound < 1e-8 relative).
    flat, unravel = ravel_pytree(params)
    m = min(150, flat.size)
    alpha, beta, _ = jax.jit(lambda f, s: lanczos(hessian_vector_product(objective, unravel(f), data)[1], s, m))(
        flat, jnp.asarray(np.random.default_rng(4).standard_normal(flat.size)))
    theta, _, bounds = ritz(alpha, beta)
    converged = theta[bounds < 1e-8 * np.abs(theta)]
    by_magnitude = converged[np.argsort(-np.abs(converged))][:n_top]
    pyh = np.array(values)[np.argsort(-np.abs(values))]
    result = {"examples": int(len(y)), "parameters": int(flat.size),
              "pyhessian_top_magnitude": pyh.tolist(), "pyhessian_power_iterations_max": iterations,
              "pyhessian_trace": float(np.mean(traces)), "pyhessian_trace_probes": len(traces),
              "pyhessian_trace_stderr": float(np.std(traces, ddof=1) / np.sqrt(len(traces))),
              "pyhessian_seconds": py_seconds, "chaosgd_top_algebraic": ours.values.tolist(),
              "chaosgd_residual_bounds": ours.residuals.tolist(), "chaosgd_top_magnitude": by_magnitude.tolist(),
              "chaosgd_vs_pyhessian_max_relative_difference": float(np.max(np.abs(pyh - by_magnitude)
                                                                             / np.abs(by_magnitude))),
              # PyHessian normalises v by ||v|| + 1e-6, so its Rayleigh quotients are lambda / (1 + 1e-6)^2: undone
              "chaosgd_vs_pyhessian_rescaled_max_relative_difference": float(np.max(
                  np.abs(pyh * (1 + 1e-6) ** 2 - by_magnitude) / np.abs(by_magnitude))),
              "chaosgd_trace": float(ours_trace.estimate), "chaosgd_trace_stderr": float(ours_trace.stderr)}
    if result["parameters"] <= 200:
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        shapes = [p.shape for p in model.parameters()]

        def loss(theta):
            tensors, i = [], 0
            for shape in shapes:
                tensors.append(theta[i:i + shape.numel()].reshape(shape))
                i += shape.numel()
            h = x
            for j in range(0, len(tensors), 2):
                h = h @ tensors[j].T + tensors[j + 1]
                h = torch.tanh(h) if j + 2 < len(tensors) else h
            return criterion(h, y)

        exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat)).numpy()
        exact_magnitude = exact[np.argsort(-np.abs(exact))][:n_top]
        result.update({"exact_top_algebraic": exact[::-1][:n_top].tolist(),
                       "exact_top_magnitude": exact_magnitude.tolist(), "exact_trace": float(exact.sum()),
                       "chaosgd_max_relative_error": float(np.max(np.abs(ours.values - exact[::-1][:n_top])
                                                                  / np.abs(exact[::-1][:n_top]))),
                       "pyhessian_max_relative_error": float(np.max(np.abs(pyh - exact_magnitude)
                                                                    / np.abs(exact_magnitude)))})
    print(f"  torch ({result['parameters']} parameters): PyHessian top by magnitude {np.round(pyh, 8).tolist()}, "
          f"chaosgd {np.round(by_magnitude, 8).tolist()}; chaosgd top algebraic {np.round(ours.values, 8).tolist()}"
          + (f", exact {np.round(result['exact_top_algebraic'], 8).tolist()}" if "exact_trace" in result else ""))
    return result


def main():
    whole_process()  # (this script makes and times JAX arrays of its own: float64, as chaosgd computes)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--m-ref", type=int, default=400, help="reference Lanczos steps")
    parser.add_argument("--epochs", type=int, default=20, help="GD epochs at eta = 7.5 for the second point")
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats")
    parser.add_argument("--examples", type=int, default=10_000, help="training images")
    args = parser.parse_args()

    arrays = load("mnist").arrays()
    data = jax.tree_util.tree_map(jnp.asarray, first(arrays, args.examples))
    model = MLP((784, 64, 10))
    objective = classification(model)
    params = model.init(jax.random.PRNGKey(0))
    results = {"network": "784-64-10 tanh", "examples": args.examples, "k": K, "tolerance": TOLERANCE,
               "cost": cost(objective, params, data, args.repeats), "points": {}}
    state = FULL_BATCH_GD.optimizer.init(params)
    trained, _ = advance((objective, FULL_BATCH_GD, args.examples, 0), params, state, jnp.float64(ETA), data,
                          jnp.int32(0), jnp.int32(0), args.epochs)
    for name, point in (("initialisation", params), (f"after {args.epochs} epochs of GD at eta={ETA:g}", trained)):
        print(name)
        entry = convergence(objective, point, data, args.m_ref)
        print(f"  top-20 {entry['top_values'][0]:.6g} .. {entry['top_values'][-1]:.6g}; all within {TOLERANCE:g} "
              f"relative from m = {entry['products_all_top20_within_1e-6']} products "
              f"({entry['products_per_eigenvalue']:.1f} per eigenvalue); reference residual bound / value <= "
              f"{entry['max_relative_residual_bound']:.2g}")
        needed = entry["products_all_top20_within_1e-6"]
        t0 = time.perf_counter()
        api = top_k(objective, point, data, K, iterations=needed, seed=3)
        seconds = time.perf_counter() - t0
        flat, unravel = ravel_pytree(point)
        hy = jax.jit(lambda f, y, d: jax.lax.map(hessian_vector_product(objective, unravel(f), d)[1], y))(
            flat, jnp.asarray(api.vectors), data)
        true_residuals = np.linalg.norm(np.asarray(hy) - api.values[:, None] * api.vectors, axis=1)
        entry["top_k_api"] = {"iterations": needed, "seconds": seconds, "seed": 3,
                              "max_relative_error": float(np.max(np.abs(api.values - entry["top_values"])
                                                                 / np.abs(entry["top_values"]))),
                              "max_residual_bound": float(api.residuals.max()),
                              "max_residual_recomputed": float(true_residuals.max())}
        entry["matfree"] = matfree_check(objective, point, data, min(args.m_ref, 2 * needed),
                                         np.array(entry["top_values"]))
        print(f"  top_k(iterations={needed}, another start): max relative error "
              f"{entry['top_k_api']['max_relative_error']:.2g}; matfree ({entry['matfree']['matfree_steps']} steps):"
              f" {entry['matfree']['max_relative_difference']:.2g}; residuals: bound {api.residuals.max():.2g}, "
              f"recomputed ||H y - theta y|| {true_residuals.max():.2g}")
        entry.update(stochastic(objective, point, data))
        results["points"][name] = entry
    iris_model = MLP((4, 10, 3))
    results["torch"] = {"iris 4-10-3": torch_comparison(iris_model.init(jax.random.PRNGKey(0)),
                                                        load_iris().arrays(), 1000),
                        "mnist 784-64-10, 2,000 images": torch_comparison(params, first(arrays, 2000), 300)}
    out = Path(__file__).with_name("results") / "hessian_spectrum.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
