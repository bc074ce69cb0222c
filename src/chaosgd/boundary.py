"""The trainability boundary: a 2-D grid of hyperparameters, each pixel one full-batch training run of a small network.

The setting is that of Sohl-Dickstein, "The boundary of neural network trainability is fractal" (arXiv:2402.06184,
and its notebook github.com/Sohl-Dickstein/fractal): a mean-field network without biases,

    h_0 = x,   z_l = h_{l-1} W_l / sqrt(n_{l-1}),   h_l = tanh(sqrt(2) z_l),   f(x) = z_L / sqrt(n_{L-1}),

width n = 16, depth L = 2, inputs of dimension n, weights, inputs and targets all N(0, 1), as many training points as
parameters (272), one regression target, mean squared error, and full-batch gradient descent with a learning rate
per layer, ``W_l <- W_l - eta_l dL/dW_l``. Every pixel starts from the same weights on the same data; only its
hyperparameters differ. Beyond the notebook, as the sweep's second axes (``training.momentum``, ``training.l2``):
heavy-ball momentum beta, ``V_l <- beta V_l + G_l, W_l <- W_l - eta_l V_l`` (V starting at 0; torch's SGD), and
an L2 penalty, ``G_l = dL/dW_l + l2 W_l`` (the loss recorded stays the mean squared error); with momentum the
training map acts on (W, V), and the Lyapunov copy below is a copy of both.

Convergence measure (the notebook's): with losses ``L_0 .. L_{N-1}`` recorded before each step, normalised
``r_t = L_t / L_0`` (a non-finite loss, and anything above, counts as 1e6), a run has converged when
``mean(r_{N-20} .. r_{N-1}) < 1`` (the mean evens out oscillation). Beside it, per pixel: the first step with
``r_t < target`` (time to target; -1 when never, or when the run did not converge: censored), and the finite-time
Lyapunov exponent of the training map by Benettin's renormalised copy: a copy starts at distance r_0 (L2, along a
random unit direction) from the pixel's weights and is trained alongside; after every step its distance d_{t+1} is
measured and the copy is moved back to distance r_{t+1} along the same direction, with
``r_t = epsilon max(1, ||theta_t||)`` (epsilon 1e-8 by default; relative to the weights' size, so that weights
growing towards overflow keep the copy resolved), so that

    lambda = (1/N) sum_t ln(d_{t+1} / r_t)

over all N steps, NaN when some step's growth cannot be measured (a non-finite loss or distance, or a copy that
collapsed onto the reference) rather than a mean over the others (the growth never saturates, unlike the paper's single
epsilon-ball of arXiv:2506.08523, which fits the slope of ln d over the rise before saturation). Beside it the peak
finite-time value ``max_{t >= 20} (1/t) sum_{s<t} ln(d_{s+1} / r_s)``: positive when a chaotic transient precedes
convergence, whose long contracting tail pulls the whole-run mean below zero. An epsilon of 1e-8 on weights of order
1 needs float64.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.precision import float64

AXES = ("eta_first", "eta_last", "eta", "init_scale", "init_offset", "momentum", "l2")
PAIRS = (("eta_first", "eta_last"), ("eta", "init_scale"), ("eta", "init_offset"), ("eta", "momentum"),
         ("eta", "l2"))
NONLINEARITIES = ("tanh", "relu", "identity")
LAST = 20  # losses averaged by the convergence measure
CLIP = 1e6  # a normalised loss counts as at most this (non-finite ones too)
PEAK_FROM = 20  # first step of the peak finite-time exponent (earlier means are a few steps' noise)
BLOCK = 4096  # pixels a file of a resumable grid holds
FORMAT = 2  # of a grid's folder: blocks of an earlier computation are refused (2: exponents over whole runs only)
LOG_LIMIT = 300  # log10 of the largest hyperparameter a grid may reach (float64 overflows past 1e308)
MAX_PIXELS = 2**26  # 8192 x 8192: the per-pixel hyperparameters and outputs alone are then gigabytes
MAX_STEPS = 2**31 - 1  # the scan's step counter is an int32
DTYPES = ("float64", "float32")
EPSILON = 1e-8  # distance of the Lyapunov copy (L2), as the paper's epsilon-ball


@dataclass(frozen=True)
class Setting:
    """The network, its data and the training run of every pixel.

    Attributes:
        width: n, the width of every layer and the input dimension (default 16, the paper's).
        depth: L, number of weight matrices (default 2: one hidden layer).
        nonlinearity: "tanh" (tanh(sqrt 2 z)), "relu" (sqrt 2 relu(z)) or "identity".
        data_ratio: training points per parameter (default 1: as many as parameters, over the targets' dimension).
        steps: N, gradient-descent steps per pixel (default 500, as in the paper).
        seed: seed of the weights, data and the copy's direction.
        eta, init_scale, init_offset, momentum, l2: the values of the hyperparameters that are not an axis of the
            grid (the learning rate of every layer; a factor on all initial weights; a constant added to the first
            layer's initial weights; heavy-ball momentum in [0, 1); the L2 coefficient, >= 0).
        target: the normalised loss that counts as trained, for the time to target (default 0.1).
    """

    width: int = 16
    depth: int = 2
    nonlinearity: str = "tanh"
    data_ratio: float = 1.0
    steps: int = 500
    seed: int = 0
    eta: float = 1.0
    init_scale: float = 1.0
    init_offset: float = 0.0
    target: float = 0.1
    momentum: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        for name, least, most in (("width", 1, 4096), ("depth", 1, 64), ("steps", LAST, MAX_STEPS),
                                  ("seed", 0, 2**32 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or not least <= value <= most:
                raise ValueError(f"{name} must be an integer in [{least}, {most:,}]; got {value!r}")
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {', '.join(NONLINEARITIES)}; got {self.nonlinearity!r}")
        if not (np.isfinite(self.data_ratio) and self.data_ratio > 0):
            raise ValueError(f"data_ratio must be > 0; got {self.data_ratio}")
        if not (np.isfinite(self.target) and 0 < self.target < 1):
            raise ValueError(f"target must be a normalised loss in (0, 1); got {self.target}")
        for name in ("eta", "init_scale", "init_offset"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite; got {getattr(self, name)}")
        if not (np.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum (--momentum) must be in [0, 1); got {self.momentum}")
        if not (np.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 (--l2) must be a finite number >= 0; got {self.l2}")

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [(self.width, self.width)] * (self.depth - 1) + [(self.width, 1)]

    @property
    def n_parameters(self) -> int:
        return sum(a * b for a, b in self.shapes)

    @property
    def n_points(self) -> int:
        return max(1, int(self.n_parameters * self.data_ratio))


@dataclass(frozen=True)
class Grid:
    """Two hyperparameters on log axes: ``x = 10**linspace(*x_range, nx)`` (columns), likewise y (rows).

    Attributes:
        x_axis, y_axis: one of the pairs in ``PAIRS`` (either order): per-layer learning rates, or a learning
            rate against the initial weights' scale or offset, the momentum or the L2 coefficient.
        x_range, y_range: log10 of the first and last value.
        shape: (ny, nx) pixels.
    """

    x_axis: str = "eta_first"
    y_axis: str = "eta_last"
    x_range: tuple[float, float] = (-3.0, 6.0)
    y_range: tuple[float, float] = (-3.0, 6.0)
    shape: tuple[int, int] = (256, 256)

    def __post_init__(self):
        if (self.x_axis, self.y_axis) not in PAIRS and (self.y_axis, self.x_axis) not in PAIRS:
            raise ValueError(f"axes {self.x_axis} x {self.y_axis} are not a grid this measures; allowed: "
                             + ", ".join(f"{a} x {b}" for a, b in PAIRS) + " (either order)")
        for name in ("x_range", "y_range"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and -LOG_LIMIT <= lo < hi <= LOG_LIMIT):
                raise ValueError(f"{name} must be (log10 low, log10 high) with -{LOG_LIMIT} <= low < high <= "
                                 f"{LOG_LIMIT} (float64's range); got {tuple(float(v) for v in getattr(self, name))}")
        if len(self.shape) != 2 or any(int(n) != n or n < 2 for n in self.shape):
            raise ValueError(f"shape must be (rows, columns), each an integer >= 2; got {self.shape}")
        for name, axis, (_, hi) in (("x", self.x_axis, self.x_range), ("y", self.y_axis, self.y_range)):
            if axis == "momentum" and not 10.0 ** hi < 1:  # (on the value: 10**-1e-17 is 1.0)
                raise ValueError(f"the momentum axis ({name}) must stay below 1: the log10 range {name}_range "
                                 f"(--{name}-range) must end below 0, e.g. (-2, -0.02); got {hi:g} (the default "
                                 "range, up to 6, is for learning rates)")
        object.__setattr__(self, "x_range", tuple(float(v) for v in self.x_range))
        object.__setattr__(self, "y_range", tuple(float(v) for v in self.y_range))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    @property
    def x(self) -> np.ndarray:
        return np.logspace(*self.x_range, self.shape[1])

    @property
    def y(self) -> np.ndarray:
        return np.logspace(*self.y_range, self.shape[0])


@dataclass(frozen=True)
class TrainabilityGrid:
    """Per pixel (arrays of ``grid.shape``, row i at ``grid.y[i]``, column j at ``grid.x[j]``):

    Attributes:
        converged: the mean of the last 20 normalised losses is below 1.
        measure: that mean (normalised losses clipped at 1e6, non-finite ones set to 1e6).
        score: the notebook's image value, ``-sum_t r_t`` where converged, ``+sum_t 1/r_t`` where not.
        time_to_target: first step t with r_t < setting.target; -1 when never reached (censored), and where
            the run did not converge (one that dips below the target and then diverges is not trained).
        finite: the loss stayed finite for all N steps.
        lyapunov: the finite-time exponent over the steps (per step); NaN where not computed, not finite, or where
            some step's growth could not be measured (the copy collapsed onto the reference or ran off).
        lyapunov_peak: its largest running mean from step 20 on; NaN likewise.
        dtype: the floating type every pixel was trained in.
        seconds: wall time of the call that returned it; computed: pixels it trained (the others were read from
            its folder), so that ``computed * steps / seconds`` is its rate.
    """

    setting: Setting
    grid: Grid
    converged: np.ndarray
    measure: np.ndarray
    score: np.ndarray
    time_to_target: np.ndarray
    finite: np.ndarray
    lyapunov: np.ndarray
    lyapunov_peak: np.ndarray
    dtype: str = "float64"
    seconds: float = field(default=0.0, compare=False)
    computed: int = field(default=0, compare=False)


@float64
def problem(setting: Setting, dtype=jnp.float64):
    """The initial weights (a list of arrays), inputs X (points x width), targets Y (points x 1) and the unit
    direction of the Lyapunov copy, all from ``setting.seed``; every pixel shares them."""
    keys = jax.random.split(jax.random.PRNGKey(setting.seed), setting.depth + 3)
    weights = [jax.random.normal(k, s, dtype=jnp.float64).astype(dtype) for k, s in zip(keys, setting.shapes)]
    x = jax.random.normal(keys[-3], (setting.n_points, setting.width), dtype=jnp.float64).astype(dtype)
    y = jax.random.normal(keys[-2], (setting.n_points, 1), dtype=jnp.float64).astype(dtype)
    tangent = [jax.random.normal(k, s, dtype=jnp.float64)
               for k, s in zip(jax.random.split(keys[-1], setting.depth), setting.shapes)]
    norm = jnp.sqrt(sum(jnp.sum(t * t) for t in tangent))
    return weights, x, y, [(t / norm).astype(dtype) for t in tangent]


@float64
def network(weights, x, nonlinearity: str = "tanh"):
    """The mean-field network's output f(x) (see the module's docstring)."""
    h = x  # (python floats below: weakly typed, so float32 weights stay float32)
    for w in weights:
        z = h @ w / math.sqrt(w.shape[0])
        if nonlinearity == "tanh":
            h = jnp.tanh(math.sqrt(2.0) * z)
        elif nonlinearity == "relu":
            h = math.sqrt(2.0) * jax.nn.relu(z)
        else:
            h = z
    return z / math.sqrt(weights[-1].shape[0])


@float64
def loss(weights, x, y, nonlinearity: str = "tanh"):
    """Mean squared error over the training points."""
    return jnp.mean((network(weights, x, nonlinearity) - y) ** 2)


def hyperparameters(setting: Setting, grid: Grid) -> np.ndarray:
    """Per pixel (flattened row by row): the learning rate of every layer, the initial scale and offset, the
    momentum and the L2 coefficient, shape (pixels, depth + 4)."""
    xs, ys = np.meshgrid(grid.x, grid.y)
    values = {grid.x_axis: xs.ravel(), grid.y_axis: ys.ravel()}
    n = xs.size
    eta = np.broadcast_to(np.asarray(values.get("eta", setting.eta), dtype=float), (n,))
    etas = np.repeat(eta[:, None], setting.depth, axis=1)
    if "eta_first" in values:  # the first layer's rate; the layers after it take it too, the last takes its own
        etas[:, :-1] = values["eta_first"][:, None]
        etas[:, -1] = values["eta_last"]
    scale = np.broadcast_to(values.get("init_scale", setting.init_scale), (n,))
    offset = np.broadcast_to(values.get("init_offset", setting.init_offset), (n,))
    momentum = np.broadcast_to(values.get("momentum", setting.momentum), (n,))
    l2 = np.broadcast_to(values.get("l2", setting.l2), (n,))
    return np.column_stack([etas, scale, offset, momentum, l2])


@functools.lru_cache(maxsize=8)
def _run_pixels(setting: Setting, dtype, lyapunov: bool, epsilon: float, heavy: bool, decay: bool):
    """A compiled function: hyperparameters (B, depth + 4) -> the per-pixel outputs of a block (kept, so that
    grids of one setting, a zoom sequence, share their compiled programs). ``heavy``, ``decay``: momentum and L2
    are in the program (without them it is the plain update, as before they existed)."""
    weights0, x, y, direction = problem(setting, dtype)
    steps, depth, nonlin = setting.steps, setting.depth, setting.nonlinearity
    value_and_grad = jax.value_and_grad(lambda w: loss(w, x, y, nonlin))
    if lyapunov:  # the reference and its copy: one more network, in the same batched products
        value_and_grad = jax.vmap(value_and_grad)

    def pixel(hp):
        etas = [hp[i] for i in range(depth)]
        beta, l2 = hp[depth + 2], hp[depth + 3]
        w0 = [hp[depth] * w for w in weights0]
        w0[0] = w0[0] + hp[depth + 1]
        radius = epsilon * jnp.maximum(1, _norm(w0))
        # The state the map acts on: the weights, and with momentum their velocities (starting at 0).
        s0 = w0 + ([jnp.zeros_like(w) for w in w0] if heavy else [])
        if lyapunov:
            s0 = [jnp.stack([s, s + radius * d]) for s, d in zip(s0, direction + [0] * (len(s0) - depth))]

        def step(carry, t):
            state, radius, first, sums, hit, log_growth, n_growth, peak = carry
            w = state[:depth]
            value, grad = value_and_grad(w)
            if decay:
                grad = [g + l2 * wi for g, wi in zip(grad, w)]
            if heavy:
                v = [beta * vi + g for vi, g in zip(state[depth:], grad)]
                state = [wi - e * vi for wi, e, vi in zip(w, etas, v)] + v
            else:
                state = [wi - e * g for wi, e, g in zip(w, etas, grad)]
            if lyapunov:
                value = value[0]
                gap = [s[1] - s[0] for s in state]
                distance = _norm(gap)
                # The copy goes back to epsilon times the state's size (at least epsilon): weights that grow
                # towards overflow would otherwise leave a fixed epsilon below their resolution.
                new_radius = epsilon * jnp.maximum(1, _norm([s[0] for s in state]))
                grows = jnp.isfinite(distance) & (distance > 0) & jnp.isfinite(value) & jnp.isfinite(new_radius)
                safe = jnp.where(grows, distance, 1)
                log_growth = log_growth + jnp.where(grows, jnp.log(safe / radius), 0)
                n_growth = n_growth + grows
                scale = jnp.where(grows, new_radius / safe, 1)
                radius = jnp.where(grows, new_radius, radius)
                state = [jnp.stack([s[0], s[0] + g * scale]) for s, g in zip(state, gap)]
                mean = log_growth / jnp.maximum(n_growth, 1)
                peak = jnp.where((t + 1 >= PEAK_FROM) & grows, jnp.maximum(peak, mean), peak)
            first = jnp.where(t == 0, value, first)
            r = value / first
            r = jnp.where(jnp.isfinite(r), jnp.minimum(r, CLIP), CLIP)
            total, inverse, last, finite = sums
            sums = (total + r, inverse + 1 / r, last + jnp.where(t >= steps - LAST, r, 0),
                    finite & jnp.isfinite(value))
            hit = jnp.where((hit < 0) & (r < setting.target), t, hit)
            return (state, radius, first, sums, hit, log_growth, n_growth, peak), None

        zero = jnp.zeros((), dtype)
        carry = (s0, radius, zero, (zero, zero, zero, jnp.array(True)), jnp.array(-1, jnp.int32), zero,
                 jnp.array(0, jnp.int32), jnp.array(-jnp.inf, dtype))
        (_, _, _, (total, inverse, last, finite), hit, log_growth, n_growth, peak), _ = jax.lax.scan(
            step, carry, jnp.arange(steps, dtype=jnp.int32))
        measure = last / LAST
        converged = measure < 1
        # Only over the whole run: a step whose copy collapsed onto the reference (distance 0) or ran off (not
        # finite) has no growth factor, and leaving it out would bias the exponent; such a pixel gets NaN.
        measured = finite & lyapunov & (n_growth == steps)
        lam = jnp.where(measured, log_growth / jnp.maximum(n_growth, 1), jnp.nan)
        peak = jnp.where(measured & jnp.isfinite(peak), peak, jnp.nan)
        hit = jnp.where(converged, hit, -1)  # a run that did not converge is never counted as trained
        return converged, measure, jnp.where(converged, -total, inverse), hit, finite, lam, peak

    return jax.jit(jax.vmap(pixel))


def _norm(arrays):
    return jnp.sqrt(sum(jnp.sum(a * a) for a in arrays))


FIELDS = ("converged", "measure", "score", "time_to_target", "finite", "lyapunov", "lyapunov_peak")


def bytes_per_pixel(setting: Setting, dtype="float64") -> int:
    """Memory one pixel of a block needs while it trains (activations and their derivatives: about 16 arrays of
    points x width per layer), for sizing blocks to a memory budget."""
    return int(np.dtype(dtype).itemsize * (16 * setting.n_points * setting.width * setting.depth
                                           + 8 * setting.n_parameters))


@float64
def trainability_grid(setting: Setting = Setting(), grid: Grid = Grid(), *, dtype: str = "float64",
                      lyapunov: bool = True, epsilon: float = EPSILON, folder: str | Path | None = None,
                      block: int = BLOCK, memory_budget: float | None = None,
                      progress: bool = False) -> TrainabilityGrid:
    """Train every pixel of ``grid`` in ``setting`` and classify it (see ``TrainabilityGrid``).

    Pixels are vmapped, ``block`` at a time (fewer when a block would need more than ``memory_budget`` bytes,
    default ``engine.default_memory_budget()``), each trained for N steps in one ``lax.scan``.
    ``dtype``: "float64" (default) or "float32" (faster on a CPU; the classification of pixels near the boundary
    can differ, which the benchmark measures; the exponent's copy at epsilon = 1e-8 needs float64, so float32 needs
    ``lyapunov=False``). ``lyapunov=False`` skips the copy (half the work). ``epsilon``: the copy's distance
    (default 1e-8). ``folder``: each block is written there atomically when done and read back instead of being
    recomputed, so an interrupted grid resumes; a folder written for other parameters is refused.
    Reference: Sohl-Dickstein 2024, arXiv:2402.06184.
    """
    from chaosgd.engine import default_memory_budget

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if lyapunov and not (np.isfinite(epsilon) and 0 < epsilon < 1):
        raise ValueError(f"epsilon must be in (0, 1); got {epsilon}")
    if lyapunov and dtype == "float32" and epsilon < 1e-3:
        raise ValueError(f"epsilon = {epsilon:g} is below float32's resolution of weights of order 1: use "
                         "dtype='float64' for the exponent, or lyapunov=False for a float32 classification")
    if isinstance(block, bool) or int(block) != block or block < 1:
        raise ValueError(f"block must be a number of pixels >= 1; got {block!r}")
    if memory_budget is not None and not (np.isfinite(memory_budget) and memory_budget > 0):
        raise ValueError(f"memory_budget must be a number of bytes > 0 (or None: the default); got {memory_budget}")
    axes = {grid.x_axis, grid.y_axis}
    replaced = axes | ({"eta"} if "eta_first" in axes else set())  # (per-layer rates replace eta too)
    for name in ("eta", "init_scale", "init_offset", "momentum", "l2"):
        default = getattr(Setting, name)
        if name in replaced and getattr(setting, name) != default:  # (a value set, then ignored)
            raise ValueError(f"{name} = {getattr(setting, name)} is set, but the grid's axes ({grid.x_axis} x "
                             f"{grid.y_axis}) give every pixel its own: leave it at its default ({default})")
    if "eta_first" in (grid.x_axis, grid.y_axis) and setting.depth < 2:
        raise ValueError("per-layer learning rates (eta_first x eta_last) need depth >= 2: with one layer the first "
                         "is the last")
    if grid.shape[0] * grid.shape[1] > MAX_PIXELS:
        raise ValueError(f"a grid of {grid.shape[0]} x {grid.shape[1]} pixels is more than {MAX_PIXELS:,}; use a "
                         "coarser one, or zoom")
    hp = hyperparameters(setting, grid)
    n = hp.shape[0]
    one = bytes_per_pixel(setting, dtype)
    if one > (memory_budget or default_memory_budget()):
        raise ValueError(f"one pixel of width {setting.width} needs about {one / 2**30:.3g} GiB, more than the memory "
                         "budget; use a narrower network")
    budget = memory_budget or default_memory_budget()
    chunk = int(max(1, min(block, n, budget // bytes_per_pixel(setting, dtype))))
    heavy, decay = "momentum" in axes or setting.momentum > 0, "l2" in axes or setting.l2 > 0
    # (Without momentum and L2 the setting is written as before they existed, so older folders still resume.)
    written = {k: v for k, v in asdict(setting).items() if k not in ("momentum", "l2") or heavy or decay}
    parameters = {"setting": written, "grid": asdict(grid), "dtype": dtype, "lyapunov": lyapunov,
                  "epsilon": float(epsilon) if lyapunov else None, "block": int(block), "format": FORMAT}
    if folder is not None:
        folder = Path(folder)
        _claim(folder, parameters)
    bar = None
    if progress:
        from chaosgd.progress import ProgressBar
        bar = ProgressBar(n * setting.steps, "boundary")
    start = time.perf_counter()
    run = None
    parts = {name: [] for name in FIELDS}
    computed = 0
    try:
        for b, lo in enumerate(range(0, n, block)):
            path = None if folder is None else folder / f"block-{b:06d}.npz"
            out = _read_block(path, min(lo + block, n) - lo) if path is not None and path.exists() else None
            if out is None:
                run = run or _run_pixels(setting, jnp.dtype(dtype), lyapunov, epsilon, heavy, decay)
                pieces = [_padded(run, hp[i:min(i + chunk, lo + block, n)], chunk, dtype)
                          for i in range(lo, min(lo + block, n), chunk)]
                out = {name: np.concatenate([p[k] for p in pieces]) for k, name in enumerate(FIELDS)}
                computed += len(out["converged"])
                if path is not None:
                    atomic_write(path, lambda f, out=out: np.savez(f, **out))
            for name in FIELDS:
                parts[name].append(out[name])
            if bar is not None:
                bar.update(len(out["converged"]) * setting.steps)
    finally:
        if bar is not None:
            bar.close()
    arrays = {name: np.concatenate(parts[name]).reshape(grid.shape) for name in FIELDS}
    return TrainabilityGrid(setting, grid, dtype=dtype, seconds=time.perf_counter() - start, computed=computed,
                            **arrays)


def _read_block(path: Path, pixels: int) -> dict | None:
    """A finished block's arrays, or None (with a warning naming the file) when it is damaged or not of this
    grid's shape: then it is computed again."""
    import warnings
    import zipfile

    try:
        with np.load(path) as saved:
            out = {name: saved[name] for name in FIELDS}
        if all(a.shape == (pixels,) for a in out.values()):
            return out
        why = f"holds {len(out['converged'])} pixels, not {pixels}"
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        why = f"cannot be read ({type(error).__name__})"
    warnings.warn(f"{path} {why}: computing that block again", stacklevel=3)
    return None


def _padded(run, hp: np.ndarray, chunk: int, dtype: str) -> list[np.ndarray]:
    """``run`` on a chunk, padded to ``chunk`` pixels (repeating its last) when that wastes less than half the
    work, so that one program serves most chunks (a short last one gets a program of its own); the padding's
    outputs are dropped."""
    n = hp.shape[0]
    full = np.concatenate([hp, np.repeat(hp[-1:], chunk - n, axis=0)]) if chunk // 2 <= n < chunk else hp
    return [np.asarray(a)[:n] for a in run(jnp.asarray(full, dtype=dtype))]


def _claim(folder: Path, parameters: dict) -> None:
    """Write the grid's parameters to ``folder/grid.json``, or check that the ones there are the same."""
    path = folder / "grid.json"
    text = json.dumps(parameters, indent=2, sort_keys=True)
    try:
        atomic_write(path, text, exclusive=True)  # of two runs starting on a new folder, one writes it
        return
    except FileExistsError:
        pass
    try:
        there = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read ({error}); delete the folder, or use another") from None
    if there != json.loads(text):
        raise ValueError(f"{folder} holds a grid of other parameters ({path}); use another folder, or the same "
                         "parameters to resume it")
