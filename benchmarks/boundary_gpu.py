"""The trainability boundary at the largest grid a time budget allows (a GPU job; runs anywhere, slowly).

Setting: arXiv:2402.06184's default (as ``benchmarks/boundary.py``): width 16, depth 2, tanh(sqrt 2 z), 272
Gaussian points, MSE, 500 full-batch steps, eta of the first layer x eta of the last over 10^-3 .. 10^6, float64.
For each job (classification only, and with the Lyapunov copy): a probe grid of one block is timed (compilation
included, so the rate is a lower bound), then the largest of ``--resolutions`` whose predicted time fits in the
job's share of ``--seconds`` is trained (resumable in ``--cache``), and its converged fraction, the boundary's
box-counting dimension with its interval, where training is fastest and, with the copy, where chaos sets in are
written to ``--out``/boundary_gpu.json with an image per grid.

Run (GPU):  CHAOSGD_MEMORY_BUDGET=40e9 python3 benchmarks/boundary_gpu.py --seconds 150 --out OUT
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

import chaosgd  # noqa: F401  (float64)
from chaosgd.atomic import atomic_write
from chaosgd.boundary import Grid, Setting, trainability_grid
from chaosgd.cli.boundary import plot_maps, summarize

sys.path.insert(0, str(Path(__file__).parent))
from boundary import dimension, onset  # noqa: E402  (the CPU benchmark's readings, shared)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[4096, 2048, 1024, 512])
    p.add_argument("--lyapunov-resolutions", type=int, nargs="+", default=[2048, 1024, 512, 256])
    p.add_argument("--block", type=int, default=2**16, help="pixels per program call and per file")
    p.add_argument("--probe", type=int, default=256, help="side of the timed probe grid")
    p.add_argument("--seconds", type=float, default=150.0, help="time for both jobs, probes included")
    p.add_argument("--share", type=float, default=0.6, help="share of --seconds for the classification job")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", default="benchmarks/results/boundary")
    p.add_argument("--cache", default="runs/boundary-gpu")
    args = p.parse_args()
    begin = time.perf_counter()
    out, cache = Path(args.out), Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    setting = Setting(steps=args.steps)
    device = jax.devices()[0]
    report = {"command": " ".join(sys.argv), "backend": jax.default_backend(), "device": device.device_kind,
              "jax": jax.__version__, "platform": platform.platform(), "setting": setting.__dict__, "jobs": []}
    jobs = [("classification", False, args.resolutions, args.share),
            ("lyapunov", True, args.lyapunov_resolutions, 1.0)]
    for name, lyapunov, sides, share in jobs:
        left = args.seconds - (time.perf_counter() - begin)
        budget = left * share
        probe = Grid(shape=(args.probe, args.probe))
        result = trainability_grid(setting, probe, lyapunov=lyapunov, block=args.block)
        rate = result.computed * setting.steps / result.seconds  # pixel-steps per second, compilation included
        fits = [n for n in sides if n * n * setting.steps / rate <= budget - result.seconds]
        job = {"job": name, "probe": {"side": args.probe, "seconds": result.seconds, "pixel_steps_per_second": rate},
               "budget_seconds": budget}
        print(f"{name}: probe {args.probe}^2 at {rate:.3g} pixel-steps/s; {budget:.0f} s left for it", flush=True)
        if fits:
            n = max(fits)
            grid = Grid(shape=(n, n))
            result = trainability_grid(setting, grid, lyapunov=lyapunov, block=args.block,
                                       folder=cache / f"{name}-{n}", progress=True)
            job.update({"side": n, "pixel_steps_per_second": result.computed * setting.steps / result.seconds,
                        **summarize(result), "dimension": dimension(result.converged)})
            if lyapunov:
                job["onset"] = onset(result)
            plot_maps(result, out / f"gpu-{name}-{n}.png")
            np.savez_compressed(out / f"gpu-{name}-{n}.npz", converged=np.packbits(result.converged),
                                shape=np.array(result.converged.shape),
                                time_to_target=result.time_to_target.astype(np.int32),
                                **({"lyapunov_peak": result.lyapunov_peak.astype(np.float32)} if lyapunov else {}))
            d = job["dimension"]
            print(f"{name}: {n}^2 in {result.seconds:.0f} s, converged {job['converged_fraction']:.3f}, dimension "
                  f"{d.get('value')} {d.get('interval')}", flush=True)
        else:
            print(f"{name}: no grid of {sides} fits in {budget:.0f} s at that rate", flush=True)
        report["jobs"].append(job)
        atomic_write(out / "boundary_gpu.json", json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
