"""The trainability boundary of arXiv:2402.06184's default setting, its box-counting dimension, and chaos against it.

Setting (the notebook's, github.com/Sohl-Dickstein/fractal, as the paper's figures): width 16, depth 2, mean-field
tanh(sqrt 2 z) network without biases, 272 Gaussian training points (as many as parameters), one Gaussian target,
MSE, full-batch GD, 500 steps, a learning rate per layer, both over 10^-3 .. 10^6 (the notebook's first window).

Parts, each timed (pixel-steps per second on this machine, with whatever else runs on it):
  1. the main grid (``--resolution`` a side, float64, with the Lyapunov copy): converged fraction, the boundary's
     box-counting dimension (local slopes and a fit over sizes 1 .. resolution / 4), and the profile of the peak
     finite-time exponent and of the time to target against the distance to the boundary;
  2. precision and cost: a ``--small`` grid of the same window in float64 with the Lyapunov copy, and in float64
     and float32 for the classification only: the rates (compilation included; the small grid is trained in one
     piece), and the fraction of pixels classified alike;
  3. a zoom sequence: ``--levels`` frames, each ``--factor`` times narrower, centred on the boundary pixel nearest
     the previous frame's centre, classification only (float64), with each frame's dimension;
  4. the extrapolated time of a 1024^2 x 500-step grid from the measured rates.
Images (PNG) and ``boundary.json`` go to ``--out``; the grids' blocks to ``--cache`` (a rerun resumes).

Run:  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/boundary.py [--resolution 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import numpy as np

import chaosgd  # noqa: F401  (float64)
from chaosgd.atomic import atomic_write
from chaosgd.boundary import Grid, Setting, trainability_grid
from chaosgd.boundary_analysis import boundary_pixel, zoom
from chaosgd.boxcount import box_dimension, boundary_pixels
from chaosgd.cli.boundary import plot_maps, summarize

GOAL = (1024, 500)  # pixels a side and steps of the goal


def dimension(converged: np.ndarray) -> dict:
    edge = boundary_pixels(converged)
    if not edge.any():
        return {"value": None}
    d = box_dimension(edge, fit=(1, min(converged.shape) // 4))
    return {"value": d.dimension, "interval": [d.low, d.high], "median": d.median, "stderr": d.stderr,
            "fitted_sizes": list(d.fitted), "sizes": d.sizes.tolist(), "counts": d.counts.tolist(),
            "local_slopes": d.local.tolist()}


def grid_of(cache: Path, name: str, setting, grid, **options):
    """A grid, resumed from ``cache/name``; its rate (pixel-steps per second, compilation included) is that of the
    run that trained all of it, kept in ``cache/name/rate.json`` (None when it was trained in parts)."""
    result = trainability_grid(setting, grid, folder=cache / name, progress=True, **options)
    path = cache / name / "rate.json"
    if result.computed == result.converged.size:
        atomic_write(path, json.dumps({"rate": result.computed * setting.steps / result.seconds,
                                       "seconds": result.seconds}))
    rate = json.loads(path.read_text())["rate"] if path.exists() else None
    return result, rate


def smooth_reference(n: int) -> dict:
    """The same estimator on smooth boundaries of an n^2 image (a disc, a tilted straight edge): the reading of a
    boundary of dimension 1 at this resolution and fit range."""
    yy, xx = np.mgrid[:n, :n]
    shapes = {"disc": (yy - 0.45 * n) ** 2 + (xx - 0.52 * n) ** 2 < (0.35 * n) ** 2,
              "tilted_edge": yy < 0.2 * xx + 0.4 * n}
    return {name: dimension(image) for name, image in shapes.items()}


def onset(result, lambda_min: float = 0.05) -> dict:
    """Per column (first layer's learning rate), over the converged pixels: the fraction whose peak exponent
    exceeds lambda_min, the fraction that reached the target and the restricted mean time to it (censored at the
    last step: pixels that never reached it count, as censored data); and the first column where most converged
    pixels show a transient expansion."""
    from chaosgd.training_time import survival

    conv, steps = result.converged, result.setting.steps
    chaotic = result.lyapunov_peak > lambda_min
    frac = [float(chaotic[:, j][conv[:, j]].mean()) if conv[:, j].any() else None for j in range(conv.shape[1])]
    reached, means = [], []
    for j in range(conv.shape[1]):
        t = result.time_to_target[:, j][conv[:, j]]
        reached.append(float(np.mean(t >= 0)) if t.size else None)
        means.append(survival(t[t >= 0], np.full(int((t < 0).sum()), steps), horizon=steps).rmst if t.size else None)
    first = next((j for j, f in enumerate(frac) if f is not None and f > 0.5), None)
    return {"x": result.grid.x.tolist(), "chaotic_fraction": frac, "reached_fraction": reached,
            "restricted_mean_time": means, "horizon": steps,
            "most_chaotic_from_x": None if first is None else float(result.grid.x[first])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--small", type=int, default=48)
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--zoom-resolution", type=int, default=48)
    p.add_argument("--factor", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", default="benchmarks/results/boundary")
    p.add_argument("--cache", default="runs/boundary-benchmark")
    args = p.parse_args()
    out, cache = Path(args.out), Path(args.cache)
    setting = Setting(steps=args.steps)
    window = Grid(shape=(args.resolution, args.resolution))
    report = {"command": "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/boundary.py "
                         f"--resolution {args.resolution} --small {args.small} --levels {args.levels} "
                         f"--factor {args.factor:g} --zoom-resolution {args.zoom_resolution} --steps {args.steps}",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "load_average_at_start": list(os.getloadavg())},
              "setting": asdict(setting)}

    main_grid, main_rate = grid_of(cache, "main", setting, window)
    report["main"] = {**summarize(main_grid), "dimension": dimension(main_grid.converged),
                      "pixel_steps_per_second": main_rate, "onset": onset(main_grid)}
    plot_maps(main_grid, out / "main.png")
    print(json.dumps({k: report["main"][k] for k in ("converged_fraction", "pixel_steps_per_second")}),
          report["main"]["dimension"].get("value"), flush=True)

    small = Grid(shape=(args.small, args.small))
    _, lyapunov_rate = grid_of(cache, "small-lyapunov", setting, small)
    f64, f64_rate = grid_of(cache, "small-float64", setting, small, lyapunov=False)
    f32, f32_rate = grid_of(cache, "small-float32", setting, small, lyapunov=False, dtype="float32")
    report["precision"] = {"shape": list(small.shape), "float64_rate": f64_rate, "float32_rate": f32_rate,
                           "float64_with_lyapunov_rate": lyapunov_rate,
                           "agree_fraction": float(np.mean(f64.converged == f32.converged)),
                           "differ_pixels": int(np.sum(f64.converged != f32.converged)),
                           "differ_on_boundary": int(np.sum((f64.converged != f32.converged)
                                                            & boundary_pixels(f64.converged)))}
    print(json.dumps(report["precision"]), flush=True)

    frames, grid, previous = [], window, main_grid
    for level in range(1, args.levels + 1):
        grid = zoom(previous.grid, boundary_pixel(previous.converged), args.factor)
        n = args.zoom_resolution
        grid = Grid(grid.x_axis, grid.y_axis, grid.x_range, grid.y_range, (n, n))
        name = f"zoom-{level}" if n == 48 else f"zoom-{level}-{n}"  # (48: the first runs' folders)
        previous, zoom_rate = grid_of(cache, name, setting, grid, lyapunov=False)
        plot_maps(previous, out / f"{name}.png")
        frames.append({"level": level, "x_range": list(grid.x_range), "y_range": list(grid.y_range),
                       "converged_fraction": float(previous.converged.mean()), "rate": zoom_rate,
                       "dimension": dimension(previous.converged)})
        print(json.dumps({k: frames[-1][k] for k in ("level", "x_range", "y_range", "converged_fraction")}),
              frames[-1]["dimension"].get("value"), flush=True)
    report["zoom"] = frames

    pixel_steps = GOAL[0] ** 2 * GOAL[1]
    rates = {"float64_with_lyapunov": lyapunov_rate, "float64": f64_rate, "float32": f32_rate}
    report["smooth_reference"] = {str(n): {k: {"value": v["value"], "interval": v["interval"]}
                                           for k, v in smooth_reference(n).items()}
                                  for n in sorted({args.resolution, args.small, args.zoom_resolution})}
    report["goal"] = {"pixels": GOAL[0] ** 2, "steps": GOAL[1],
                      "minutes": {k: pixel_steps / r / 60 if r else None for k, r in rates.items()},
        "how": "extrapolated from the measured rates (the full grid was not run)"}
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    name = "boundary.json" if args.zoom_resolution == 48 else f"boundary-zoom{args.zoom_resolution}.json"
    atomic_write(out / name, json.dumps(report, indent=2, default=float))
    print(json.dumps(report["goal"]), flush=True)


if __name__ == "__main__":
    main()
