"""Reading a trainability grid (``chaosgd.boundary``): zoom windows centred on its boundary, each pixel's distance
to it, and where transient expansion and fast training lie against it."""

from __future__ import annotations

import numpy as np

from chaosgd.boundary import Grid, TrainabilityGrid
from chaosgd.lyapunov import LAMBDA_MIN


def zoom(grid: Grid, pixel: tuple[int, int], factor: float) -> Grid:
    """The window of ``grid``'s shape centred on ``pixel`` (row, column), ``factor`` times narrower in each log
    axis: the next frame of a zoom sequence (centre it on a boundary pixel, ``boundary_pixel``)."""
    if not (np.isfinite(factor) and factor >= 1):
        raise ValueError(f"zoom factor must be >= 1; got {factor}")
    row, col = pixel
    if not (0 <= row < grid.shape[0] and 0 <= col < grid.shape[1]):
        raise ValueError(f"pixel {pixel} is outside the grid of shape {grid.shape}")
    cx, cy = np.log10(grid.x[col]), np.log10(grid.y[row])
    hx = (grid.x_range[1] - grid.x_range[0]) / (2 * factor)
    hy = (grid.y_range[1] - grid.y_range[0]) / (2 * factor)
    x_range, y_range = (cx - hx, cx + hx), (cy - hy, cy + hy)
    # A momentum axis must stay below 1: a window centred near the top of the parent's slides down to end where
    # the parent's does (the frame is then off-centre, but inside the parent and as narrow).
    x_range, y_range = (_below_parent(r, parent) if axis == "momentum" else r
                        for r, parent, axis in ((x_range, grid.x_range, grid.x_axis),
                                                (y_range, grid.y_range, grid.y_axis)))
    return Grid(grid.x_axis, grid.y_axis, x_range, y_range, grid.shape)


def _below_parent(window: tuple[float, float], parent: tuple[float, float]) -> tuple[float, float]:
    shift = max(0.0, window[1] - parent[1])
    return window[0] - shift, window[1] - shift


def boundary_pixel(converged: np.ndarray, near: tuple[float, float] | None = None) -> tuple[int, int]:
    """The boundary pixel (one whose 4-neighbour is classified otherwise, on either side) nearest ``near`` (row,
    column; default the centre); ValueError when the image has no boundary."""
    from chaosgd.boxcount import boundary_pixels

    rows, cols = np.nonzero(boundary_pixels(converged, both_sides=True))
    if rows.size == 0:
        raise ValueError("the image has no boundary: every pixel is classified alike")
    near = near if near is not None else ((converged.shape[0] - 1) / 2, (converged.shape[1] - 1) / 2)
    i = int(np.argmin((rows - near[0]) ** 2 + (cols - near[1]) ** 2))
    return int(rows[i]), int(cols[i])


def boundary_distance(converged: np.ndarray) -> np.ndarray:
    """Signed distance in pixels from every pixel to the nearest pixel of the other class: > 0 on the converged
    side, < 0 on the other (1 and -1 next to the boundary)."""
    from scipy import ndimage

    converged = np.asarray(converged, dtype=bool)
    inside = ndimage.distance_transform_edt(converged)  # distance to the nearest non-converged pixel
    outside = ndimage.distance_transform_edt(~converged)
    return np.where(converged, inside, -outside)


def profile(result: TrainabilityGrid, edges=(1, 2, 4, 8, 16, 32, 64, 1e9), *, lambda_min: float = LAMBDA_MIN) -> dict:
    """Against the distance to the boundary (pixels, bins ``[edges[k], edges[k+1])`` on the converged side): the
    number of converged pixels, the fraction whose peak exponent, and whose whole-run exponent, exceeds
    ``lambda_min`` (default 0.05 per step: a transient expansion), and the time to target as censored data (pixels
    that never reached it count as censored at the last step): the fraction reached, the Kaplan-Meier median (None
    when over half are censored: it is beyond the steps) and the restricted mean up to the last step."""
    from chaosgd.training_time import survival

    d = boundary_distance(result.converged)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = result.converged & (d >= lo) & (d < hi)
        peak, lam, time = result.lyapunov_peak[inside], result.lyapunov[inside], result.time_to_target[inside]
        row = {"from": float(lo), "to": float(hi), "pixels": int(inside.sum()),
               "positive_peak": float(np.mean(peak > lambda_min)) if np.isfinite(peak).any() else None,
               "positive_exponent": float(np.mean(lam > lambda_min)) if np.isfinite(lam).any() else None,
               "reached": int((time >= 0).sum()), "censored": int((time < 0).sum())}
        if time.size:
            s = survival(time[time >= 0], np.full(int((time < 0).sum()), result.setting.steps),
                         horizon=result.setting.steps)
            row.update(median_time=float(s.median) if np.isfinite(s.median) else None, restricted_mean=s.rmst)
        rows.append(row)
    return {"edges": list(map(float, edges)), "lambda_min": lambda_min, "horizon": result.setting.steps,
            "rows": rows}


def fastest(result: TrainabilityGrid, *, fraction: float = 0.1, lambda_min: float = LAMBDA_MIN) -> dict:
    """Where training is fastest: of the pixels that reached the target, the ``fraction`` with the shortest times
    (censoring does not bias this choice: a pixel that never reached the target is slower than every one that did);
    their count, time range, median distance to the boundary (pixels), the fraction whose peak exponent exceeds
    ``lambda_min``, that fraction among all converged pixels for comparison (both None without exponents), their
    median axis values, and how many converged pixels reached the target at all."""
    time = result.time_to_target
    reached = time >= 0
    if not reached.any():
        return {"pixels": 0}
    cut = np.quantile(time[reached], fraction)
    best = reached & (time <= cut)
    rows, cols = np.nonzero(best)
    d = boundary_distance(result.converged)
    peak = result.lyapunov_peak

    def expanding(where):  # (None for a grid trained without the exponent: nothing was measured)
        return float(np.mean(peak[where] > lambda_min)) if np.isfinite(peak).any() else None

    return {"pixels": int(best.sum()), "time_range": [int(time[best].min()), int(cut)],
            "median_distance": float(np.median(d[best])),
            "positive_peak": expanding(best), "positive_peak_all_converged": expanding(result.converged),
            "median_x": float(np.median(result.grid.x[cols])), "median_y": float(np.median(result.grid.y[rows])),
            "reached": int(reached.sum()), "converged": int(result.converged.sum())}
