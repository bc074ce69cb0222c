"""The least time a trainability grid can take on this machine: its arithmetic over the machine's matrix-product limit.

The work of one pixel-step is read from XLA's cost analysis of the compiled pixel program (``chaosgd.boundary``;
the analysis counts the body of the training scan once, so its flops over the block's pixels are one step's),
times the grid's pixel-steps; the limit is the best of ``--repeats`` numpy (OpenBLAS) products of two square
matrices of side ``--side``, float64 and float32, measured in the same run. The floor assumes every flop runs at
that limit, which the pixel program's small products (272 x 16 x 16 per pixel) cannot reach, so real grids are
slower; a goal below the floor cannot be met by any implementation on this machine.

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/boundary_floor.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.boundary import Grid, Setting, _run_pixels, hyperparameters
from chaosgd.precision import whole_process


def gemm_limit(dtype, side: int, repeats: int) -> float:
    """Best FLOP/s of ``side``-square products in ``dtype`` (the first one warms the library up)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((side, side)).astype(dtype) for _ in range(2))
    out = np.empty((side, side), dtype=dtype)
    np.matmul(a, b, out=out)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * side ** 3 / best


def flops_per_pixel_step(setting: Setting, dtype: str, lyapunov: bool, pixels: int = 64) -> float:
    run = _run_pixels(setting, jnp.dtype(dtype), lyapunov, 1e-8, False, False)
    side = int(np.sqrt(pixels))
    hp = jnp.asarray(hyperparameters(setting, Grid(shape=(side, side))), dtype=dtype)
    analysis = run.lower(hp).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"]) / (side * side)


def main() -> None:
    whole_process()  # (this script makes and times JAX arrays of its own: float64, as chaosgd computes)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--side", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/boundary/floor.json")
    args = p.parse_args()
    setting = Setting(steps=args.steps)
    pixel_steps = args.resolution ** 2 * args.steps
    limits = {name: gemm_limit(np.dtype(name), args.side, args.repeats) for name in ("float64", "float32")}
    rows = []
    for dtype, lyapunov in (("float64", True), ("float64", False), ("float32", False)):
        flops = flops_per_pixel_step(setting, dtype, lyapunov)
        seconds = flops * pixel_steps / limits[dtype]
        rows.append({"dtype": dtype, "lyapunov": lyapunov, "flops_per_pixel_step": flops,
                     "grid_flops": flops * pixel_steps, "floor_minutes": seconds / 60})
        print(f"{dtype}{' with the copy' if lyapunov else ''}: {flops:,.0f} flop a pixel-step, "
              f"{flops * pixel_steps:.3g} for {args.resolution}^2 x {args.steps}; at {limits[dtype] / 1e9:.0f} "
              f"GFLOP/s at least {seconds / 60:.1f} min", flush=True)
    report = {"command": "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/boundary_floor.py "
                         f"--resolution {args.resolution} --steps {args.steps} --side {args.side}",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average": list(os.getloadavg())},
              "gemm_limit_flops": limits, "grid": [args.resolution, args.resolution], "steps": args.steps,
              "rows": rows}
    atomic_write(Path(args.out), json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
