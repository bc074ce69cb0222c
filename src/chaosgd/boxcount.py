"""Box-counting dimension of a set of pixels, and the boundary of a two-class image.

For a set of pixels in a 2-D image and boxes of side s (pixels) on a grid, N(s) is the number of boxes holding at
least one pixel of the set (the fewest over four placements of the grid, an approximation of the minimal cover);
the box-counting dimension is the slope of ``ln N(s)`` against ``ln(1/s)``,

    D = -d ln N / d ln s,

measured here over box sizes ``s = 2^k``: the local slopes ``D_k = ln(N(s_k) / N(s_{k+1})) / ln(s_{k+1} / s_k)``
between successive sizes, and a least-squares line over the middle sizes (by default from 2 pixels, where the pixel
grid stops dominating, to an eighth of the image's shorter side, where at least 64 boxes tile it). Beside it, the
spread of the local slopes inside the fitted sizes (their smallest and largest: not a confidence interval, and with
few sizes a narrow spread says little; a regression interval would treat the nested counts as independent errors,
its standard error is given too, as ``stderr``). Sohl-Dickstein's notebook (arXiv:2402.06184) counts boxes with
porespy's ``boxcount`` over 10 logarithmic sizes and reports the median of the local slopes over sizes and frames,
which is given too (``median``). Falconer, Fractal Geometry (Wiley 2014, ISBN 978-1-119-94239-9), section 3.1, for
the definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def boundary_pixels(image: np.ndarray, *, both_sides: bool = False) -> np.ndarray:
    """The pixels of a 2-D boolean image that are True and have a 4-neighbour (up, down, left or right, inside the
    image) that is False: a digital curve one pixel thick along every edge between the classes. ``both_sides``:
    the False neighbours too, a band two pixels thick (whose small boxes count a straight edge twice over, which
    reads a straight line on 48^2 pixels as dimension 1.2 .. 1.3 over sizes 1 .. 12; one side reads it as 1)."""
    image = _image(image)
    edge = np.zeros(image.shape, dtype=bool)
    vertical = image[1:, :] != image[:-1, :]
    horizontal = image[:, 1:] != image[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge if both_sides else edge & image


def box_counts(mask: np.ndarray, sizes=None) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, N(s))``: boxes of side s (default 1, 2, 4, ... up to the image's shorter side) that hold a pixel of
    ``mask``, the fewest over four placements of the box grid (shifted by 0 or s/2 pixels in each direction: a
    line that straddles the grid's lines of one placement would count double); the image is padded with empty
    pixels."""
    mask = _image(mask)
    if sizes is None:
        sizes = 2 ** np.arange(int(np.log2(min(mask.shape))) + 1)
    sizes = np.asarray(sizes, dtype=int)
    if sizes.ndim != 1 or sizes.size == 0 or np.any(sizes < 1):
        raise ValueError(f"box sizes must be integers >= 1; got {sizes}")
    counts = []
    for s in sizes:
        best = None
        for dr in sorted({0, s // 2}):
            for dc in sorted({0, s // 2}):
                rows, cols = -(-(mask.shape[0] + dr) // s) * s, -(-(mask.shape[1] + dc) // s) * s
                padded = np.zeros((rows, cols), dtype=bool)
                padded[dr:dr + mask.shape[0], dc:dc + mask.shape[1]] = mask
                n = int(padded.reshape(rows // s, s, cols // s, s).any(axis=(1, 3)).sum())
                best = n if best is None else min(best, n)
        counts.append(best)
    return sizes, np.array(counts)


@dataclass(frozen=True)
class BoxDimension:
    """The box-counting dimension of a set of pixels.

    Attributes:
        dimension: slope of the least-squares line of ln N(s) against ln(1/s) over the fitted sizes.
        low, high: the smallest and largest local slope inside the fitted sizes (their spread; not a confidence
            interval).
        stderr: the least-squares slope's standard error (NaN with two sizes).
        median: the median local slope inside the fitted sizes (the notebook's estimate).
        sizes, counts: s and N(s) at every size counted.
        local: local slopes between successive sizes (``local[k]`` between ``sizes[k]`` and ``sizes[k + 1]``).
        fitted: the first and last fitted size.
    """

    dimension: float
    low: float
    high: float
    stderr: float
    median: float
    sizes: np.ndarray
    counts: np.ndarray
    local: np.ndarray
    fitted: tuple[int, int]


def box_dimension(mask: np.ndarray, *, fit: tuple[int, int] | None = None) -> BoxDimension:
    """The box-counting dimension of the pixels of ``mask`` (see the module's docstring).

    ``fit=(s_min, s_max)``: the box sizes fitted (default ``(2, shorter side / 8)``; at least two powers of two).
    An empty mask is refused.
    """
    from chaosgd.lyapunov import fit_line

    mask = _image(mask)
    if not mask.any():
        raise ValueError("the mask holds no pixel: it has no dimension")
    sizes, counts = box_counts(mask)
    lo, hi = fit if fit is not None else (2, max(4, min(mask.shape) // 8))
    chosen = (sizes >= lo) & (sizes <= hi)
    if chosen.sum() < 2:
        raise ValueError(f"fit=({lo}, {hi}) holds fewer than two of the box sizes {sizes.tolist()}: give a wider "
                         "range, or a larger image (at least 32 pixels a side for the default range)")
    x, y = -np.log(sizes.astype(float)), np.log(counts.astype(float))
    local = (y[:-1] - y[1:]) / (x[:-1] - x[1:])
    inner = local[chosen[:-1] & chosen[1:]]
    slope, _, _, stderr = fit_line(x[chosen], y[chosen])
    return BoxDimension(slope, float(inner.min()), float(inner.max()), stderr, float(np.median(inner)), sizes,
                        counts, local, (int(sizes[chosen][0]), int(sizes[chosen][-1])))


def _image(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError(f"need a 2-D image; got shape {image.shape}")
    if image.dtype != bool:
        raise ValueError(f"need a boolean image (True: in the set); got dtype {image.dtype}")
    return image
