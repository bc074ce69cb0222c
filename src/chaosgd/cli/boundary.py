"""``chaosgd boundary``: the trainability boundary of a small network over two hyperparameters, its box-counting
dimension, and the Lyapunov exponent and time to target on the same grid (arXiv:2402.06184's setting)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.cli.options import add_out, out_folder
from chaosgd.experiments.store import RUNS

LABELS = {"eta_first": "learning rate of the first layer", "eta_last": "learning rate of the last layer",
          "eta": "learning rate", "init_scale": "scale of the initial weights",
          "init_offset": "offset of the first layer's initial weights", "momentum": "momentum (heavy ball)",
          "l2": "L2 coefficient"}


def add_boundary(p: argparse.ArgumentParser) -> None:
    from chaosgd.boundary import AXES, DTYPES, NONLINEARITIES, Setting

    add_out(p, "runs/boundary-<x>-<y>")
    p.add_argument("--x", choices=AXES, default="eta_first", help="hyperparameter of the columns")
    p.add_argument("--y", choices=AXES, default="eta_last", help="hyperparameter of the rows")
    p.add_argument("--x-range", type=float, nargs=2, default=(-3.0, 6.0), metavar=("LOW", "HIGH"),
                   help="log10 of the first and last column's value")
    p.add_argument("--y-range", type=float, nargs=2, default=(-3.0, 6.0), metavar=("LOW", "HIGH"),
                   help="log10 of the first and last row's value")
    p.add_argument("--resolution", type=int, default=128, help="pixels a side")
    p.add_argument("--zoom", type=float, default=1.0,
                   help="zoom factor: the window FACTOR times narrower, centred on the boundary pixel nearest the "
                        "centre of a first grid of the given ranges (1: no zoom)")
    s = Setting()
    p.add_argument("--steps", type=int, default=s.steps, help="gradient-descent steps per pixel")
    p.add_argument("--width", type=int, default=s.width, help="width of the network and input dimension")
    p.add_argument("--depth", type=int, default=s.depth, help="weight matrices")
    p.add_argument("--nonlinearity", choices=NONLINEARITIES, default=s.nonlinearity, help="activation")
    p.add_argument("--data-ratio", type=float, default=s.data_ratio, help="training points per parameter")
    p.add_argument("--target", type=float, default=s.target, help="normalised loss of the time to target")
    p.add_argument("--seed", type=int, default=s.seed, help="seed of the weights and data")
    p.add_argument("--momentum", type=float, default=s.momentum,
                   help="heavy-ball momentum in [0, 1) where it is not an axis (an axis: log10 range ending below 0)")
    p.add_argument("--l2", type=float, default=s.l2, help="L2 coefficient where it is not an axis")
    p.add_argument("--dtype", choices=DTYPES, default="float64",
                   help="precision (float32 needs --no-lyapunov: the copy at epsilon = 1e-8 needs float64)")
    p.add_argument("--no-lyapunov", action="store_true", help="classification and time only (half the work)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_boundary(args) -> int:
    from chaosgd.boundary import Grid, Setting

    setting = Setting(width=args.width, depth=args.depth, nonlinearity=args.nonlinearity, data_ratio=args.data_ratio,
                      steps=args.steps, seed=args.seed, target=args.target, momentum=args.momentum, l2=args.l2)
    grid = Grid(args.x, args.y, tuple(args.x_range), tuple(args.y_range), (args.resolution, args.resolution))
    if not np.isfinite(args.zoom) or args.zoom < 1:
        raise ValueError(f"--zoom must be >= 1; got {args.zoom}")
    if args.dtype == "float32" and not args.no_lyapunov:
        raise ValueError("--dtype float32: the Lyapunov copy at epsilon = 1e-8 needs float64; add --no-lyapunov "
                         "for a float32 classification, or use --dtype float64")
    out = out_folder(args, RUNS / f"boundary-{args.x}-{args.y}")
    boundary(out, setting, grid, zoom_factor=args.zoom, dtype=args.dtype, lyapunov=not args.no_lyapunov,
             progress=not args.quiet)
    return 0


def boundary(out: Path, setting, grid, *, zoom_factor: float = 1.0, dtype: str = "float64", lyapunov: bool = True,
             progress: bool = True) -> dict:
    """The grid (resumable in ``out/grid`` and, when zooming, ``out/start``), its dimension and images into
    ``out``; returns the summary written to ``boundary.json``."""
    from chaosgd.boundary import trainability_grid
    from chaosgd.boundary_analysis import boundary_pixel, zoom
    from chaosgd.boxcount import box_dimension, boundary_pixels

    out = Path(out)
    if zoom_factor > 1:
        first = trainability_grid(setting, grid, dtype=dtype, lyapunov=False, folder=out / "start", progress=progress)
        grid = zoom(grid, boundary_pixel(first.converged), zoom_factor)
    result = trainability_grid(setting, grid, dtype=dtype, lyapunov=lyapunov, folder=out / "grid",
                               progress=progress)
    summary = summarize(result)
    edge = boundary_pixels(result.converged)
    if edge.any() and min(grid.shape) >= 16:
        dim = box_dimension(edge, fit=(1, min(grid.shape) // 4))
        summary["dimension"] = {"value": dim.dimension, "slope_spread": [dim.low, dim.high], "median": dim.median,
                                "stderr": dim.stderr, "fitted_sizes": list(dim.fitted),
                                "sizes": dim.sizes.tolist(), "counts": dim.counts.tolist(),
                                "local_slopes": dim.local.tolist()}
    atomic_write(out / "boundary.npz", lambda f: np.savez(
        f, x=grid.x, y=grid.y, **{name: getattr(result, name) for name in
                                  ("converged", "measure", "score", "time_to_target", "finite", "lyapunov",
                                   "lyapunov_peak")}))
    atomic_write(out / "boundary.json", json.dumps(summary, indent=2, default=float))
    plot_maps(result, out / "boundary.png")
    d = summary.get("dimension")
    print(f"{grid.shape[0]} x {grid.shape[1]} pixels x {setting.steps} steps "
          + (f"in {result.seconds:.1f} s" if result.computed else "(this grid read back, nothing trained)") + ": "
          f"{100 * summary['converged_fraction']:.1f}% converged"
          + (f", boundary dimension {d['value']:.3f} (local slopes {d['slope_spread'][0]:.3f} .. "
             f"{d['slope_spread'][1]:.3f})" if d else ", no boundary to measure") + f"; results and images in {out}")
    f = summary["fastest"]
    if f["pixels"] and f["positive_peak"] is not None:
        print(f"fastest tenth of the pixels that reached the target ({f['pixels']}, {f['time_range'][0]} .. "
              f"{f['time_range'][1]} steps): {100 * f['positive_peak']:.0f}% expand transiently (against "
              f"{100 * f['positive_peak_all_converged']:.0f}% of all converged pixels), a median "
              f"{f['median_distance']:.0f} pixels inside the boundary")
    return summary


def summarize(result) -> dict:
    """The settings and the headline numbers of a grid, as plain data."""
    from dataclasses import asdict

    from chaosgd.boundary import CLIP, LAST
    from chaosgd.boundary_analysis import fastest, profile

    return {"setting": asdict(result.setting), "grid": asdict(result.grid), "dtype": result.dtype,
            "convergence": f"converged when the mean of the last {LAST} losses, each divided by the first "
                           f"(non-finite and larger ones as {CLIP:g}), is below 1",
            "converged_fraction": float(result.converged.mean()), "finite_fraction": float(result.finite.mean()),
            "seconds": result.seconds,
            "pixels_trained": result.computed,  # (the others were read back from the folder)
            "pixel_steps_per_second": (result.computed * result.setting.steps / result.seconds
                                       if result.computed else None),
            "profile": profile(result), "fastest": fastest(result)}


def plot_maps(result, path: Path) -> None:
    """Three panels on the grid's log axes: converged (blue) / not (red), the peak finite-time exponent, and the
    time to target (white: never), each with the boundary drawn in black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chaosgd.boxcount import boundary_pixels

    g = result.grid
    extent = [*g.x_range, *g.y_range]
    edge = np.ma.masked_where(~boundary_pixels(result.converged), np.zeros(g.shape))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    peak = result.lyapunov_peak
    bound = np.nanmax(np.abs(peak)) if np.isfinite(peak).any() else 1.0
    time = np.where(result.time_to_target >= 0, result.time_to_target, np.nan).astype(float)
    panels = ((np.where(result.converged, 1.0, 0.0), "RdBu", 0, 1, "converged (blue) / not (red)"),
              (peak, "PuOr_r", -bound, bound, "peak finite-time Lyapunov exponent (per step)"),
              (time, "viridis", None, None, f"steps to loss / first < {result.setting.target:g}"))
    for ax, (values, cmap, lo, hi, title) in zip(axes, panels):
        image = ax.imshow(values, origin="lower", extent=extent, cmap=cmap, vmin=lo, vmax=hi, aspect="auto",
                          interpolation="nearest")
        ax.imshow(edge, origin="lower", extent=extent, cmap="gray", vmin=0, vmax=1, aspect="auto",
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"log10 {LABELS[g.x_axis]}")
        ax.set_ylabel(f"log10 {LABELS[g.y_axis]}")
        if values is not panels[0][0]:
            fig.colorbar(image, ax=ax, shrink=0.85)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
