"""Routes to the CPU's fastest float64 GEMM from inside a jitted program, for issue "the engine at the hardware
limit": the two large products of K networks' epoch (``X @ W`` and ``X^T @ G``, X = 60000 x 784, width 64K) timed
with numpy (OpenBLAS), XLA's own product, XLA calling numpy through ``jax.pure_callback``, and XLA calling scipy's
OpenBLAS ``dgemm`` through an FFI custom call (``chaosgd.gemm``, the engine's route; its results are checked against
numpy's). Median of ``--repeats``; GFLOP/s. Random data (the cost does not depend on the values).

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/blas_routes.py [--k 8]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from chaosgd.gemm import blas_available, gemm
from chaosgd.precision import whole_process
from engine_throughput import median_time  # (run as a script: benchmarks/ is on the path)

N, D, H = 60_000, 784, 64


def median_seconds(fn, repeats: int) -> float:
    fn()  # compile and warm up
    return median_time(fn, repeats)


def callback(f, shape, *args):
    return jax.pure_callback(f, jax.ShapeDtypeStruct(shape, args[0].dtype), *args)


def main() -> None:
    whole_process()  # (this script makes and times JAX arrays of its own: float64, as chaosgd computes)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "blas_routes.json"))
    args = parser.parse_args()
    width = H * args.k
    rng = np.random.default_rng(0)
    x, w, g = rng.standard_normal((N, D)), rng.standard_normal((D, width)), rng.standard_normal((N, width))
    xj, wj, gj = map(jnp.asarray, (x, w, g))
    flop = 2 * 2 * N * D * width
    xla = jax.jit(lambda x, w, g: (x @ w, x.T @ g))
    via_numpy = jax.jit(lambda x, w, g: (callback(lambda a, b: a @ b, (N, width), x, w),
                                         callback(lambda a, b: a.T @ b, (D, width), x, g)))
    rates = {
        "numpy (OpenBLAS)": flop / median_seconds(lambda: (x @ w, x.T @ g), args.repeats) / 1e9,
        "XLA": flop / median_seconds(lambda: jax.block_until_ready(xla(xj, wj, gj)), args.repeats) / 1e9,
        "XLA -> pure_callback -> numpy": flop / median_seconds(
            lambda: jax.block_until_ready(via_numpy(xj, wj, gj)), args.repeats) / 1e9,
    }
    if blas_available():
        via_ffi = jax.jit(lambda x, w, g: (gemm(x, w), gemm(x, g, trans_a=True)))
        got = via_ffi(xj, wj, gj)
        error = max(float(np.abs(np.asarray(got[0]) - x @ w).max()), float(np.abs(np.asarray(got[1]) - x.T @ g).max()))
        print(f"FFI route: largest difference from numpy {error:.3g}")
        rates["XLA -> FFI -> OpenBLAS dgemm"] = flop / median_seconds(
            lambda: jax.block_until_ready(via_ffi(xj, wj, gj)), args.repeats) / 1e9
    for name, rate in rates.items():
        print(f"{name:32s} {rate:7.1f} GFLOP/s")
    Path(args.out).write_text(json.dumps({"k": args.k, "gflops": rates, "jax": jax.__version__,
                                          "date": time.strftime("%Y-%m-%d")}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
