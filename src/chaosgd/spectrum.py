"""The Hessian spectrum of the training loss beyond its top eigenvalue: the k largest eigenvalues, the trace and the
spectral density, matrix-free (only Hessian-vector products, forward over reverse; H is never formed).

- ``top_k``: the k largest algebraic eigenvalues by Lanczos with full re-orthogonalisation (Lanczos 1950,
  doi:10.6028/jres.045.026), with Paige's residual bounds ``|beta_m s_mi|``.
- ``trace``: Hutchinson's estimator (doi:10.1080/03610919008812866) or Hutch++ (Meyer, Musco, Musco, Woodruff
  2021, arXiv:2010.09649), with its standard error.
- ``density``: stochastic Lanczos quadrature (Ghorbani, Krishnan, Xiao 2019, arXiv:1901.10159): per probe the
  nodes and weights of a Gauss quadrature of the spectral measure; ``broadened_density`` draws it on a grid and
  ``density_moments`` gives the moments it implies, each with its standard error.

Each takes ``scale``, a flat vector s: the spectrum of ``diag(s) H diag(s)`` instead, which for ``s = P^-1/2`` is
that of the preconditioned Hessian ``P^-1 H`` of an adaptive optimiser (as ``sharpness.top_eigenvalue``). Each has
an ensemble form (``top_k_ensemble``, ``trace_ensemble``, ``density_ensemble``) over parameters stacked on a leading
axis of K members, one compiled, vectorised call, whose results carry that leading axis; the one-network forms are
the ensemble forms with K = 1. Member i draws its random vectors from ``fold_in(PRNGKey(seed), members[i])``
(``members`` defaults to 0 .. K-1), so any member can be recomputed alone.

Why not matfree (which implements these in JAX): the top-k must run the very Lanczos loop of the sharpness
(``hessian.lanczos``), which is core code and cannot depend on an optional package; matfree 0.6.3 has no Hutch++;
and the loop is twenty lines. matfree does work with this JAX (0.10.2): ``benchmarks/hessian_spectrum.py`` uses its
``decomp.tridiag_sym`` as an independent check of the top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chaosgd.objective import Objective
from chaosgd.hessian import hessian_vector_product, lanczos, lanczos_steps, over_members, ritz
from chaosgd.precision import float64

TRACE_METHODS = ("hutch++", "hutchinson")


@dataclass(frozen=True)
class TopK:
    """The k largest algebraic eigenvalues, largest first (ensemble form: a leading member axis on each array).

    Attributes:
        values: Ritz values ``theta_1 >= ... >= theta_k``, shape (k,) or (K, k).
        residuals: ``|beta_m s_mi|`` = ``||H y_i - theta_i y_i||``, a bound on each value's distance to the
            spectrum (Paige 1971), shape as ``values``.
        vectors: the unit Ritz vectors y_i (flat, as ``ravel_pytree`` orders the parameters), (k, P) or (K, k, P).
        products: Hessian-vector products spent per network.
    """

    values: np.ndarray
    residuals: np.ndarray
    vectors: np.ndarray
    products: int


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic estimate of ``tr H`` (ensemble form: arrays of shape (K,)).

    Attributes:
        estimate: the trace estimate.
        stderr: its standard error (the sample standard deviation of the probes' quadratic forms over the square
            root of their number; for Hutch++ that of the deflated part, its only random part given the sketch).
        products: Hessian-vector products spent per network.
        method: ``"hutch++"`` or ``"hutchinson"``.
    """

    estimate: np.ndarray
    stderr: np.ndarray
    products: int
    method: str


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the spectral measure ``mu = (1/P) sum_i delta(x - lambda_i)``.

    Attributes:
        nodes: Ritz values of each probe's tridiagonal matrix, shape (probes, steps) or (K, probes, steps).
        weights: the squared first components of T's eigenvectors (each probe's weights sum to 1), same shape.
        size: P, the number of parameters (``P * moment 1`` estimates the trace).
        products: Hessian-vector products spent per network (probes x steps).
    """

    nodes: np.ndarray
    weights: np.ndarray
    size: int
    products: int


@float64
def top_k(objective: Objective, params, data, k: int, *, iterations: int | None = None, start=None, seed: int = 0,
          scale=None) -> TopK:
    """The k largest algebraic eigenvalues of the training loss's Hessian at ``params`` (one network).

    Keyword arguments:
        iterations: Lanczos steps m (Hessian-vector products); default ``max(6k, 30)``, at most P (the top 20
            of 784-64-10 on MNIST needed 90-107 for 1e-6 relative, ``docs/spectrum.md``). Ritz values converge
            from the ends of the spectrum inwards: the top ones first; ``residuals`` say how far each can be off.
        start: starting vector (flat); default a random normal one from ``seed``. Along a trajectory, the sum of
            the previous call's ``vectors`` makes a good start.
        seed: for the random start.
        scale: flat s: the eigenvalues of ``diag(s) H diag(s)`` (``s = P^-1/2``: of ``P^-1 H``).

    Formula: m steps of Lanczos give ``H V^T = V^T T + beta_m v_{m+1} e_m^T``; the eigenpairs (theta_i, s_i) of
    the m x m tridiagonal T give Ritz pairs (theta_i, V^T s_i) with residual ``|beta_m s_mi|``.
    """
    result = top_k_ensemble(objective, _stack(params), data, k, iterations=iterations,
                            start=None if start is None else np.asarray(start)[None], seed=seed,
                            scale=None if scale is None else np.asarray(scale)[None])
    return TopK(result.values[0], result.residuals[0], result.vectors[0], result.products)


@float64
def top_k_ensemble(objective: Objective, params, data, k: int, *, iterations: int | None = None, start=None,
                   seed: int = 0, scale=None, members=None) -> TopK:
    """``top_k`` for K networks stacked on a leading axis of ``params``, in one compiled, vectorised loop.

    ``start`` and ``scale``: None or one flat vector per member, shape (K, P); ``members``: the members' indices for
    their random starts (default 0 .. K-1). A member whose parameters are not finite (diverged) gets NaN, the others
    their values (so do ``trace_ensemble`` and ``density_ensemble``).
    """
    flats, unravel = _flatten(params)
    n_members, size = flats.shape
    if int(k) != k or not 1 <= k <= size:
        raise ValueError(f"k must be an integer in 1 .. {size} (the number of parameters); got {k}")
    if iterations is not None and int(iterations) != iterations:
        raise ValueError(f"iterations must be an integer; got {iterations}")
    m = max(6 * int(k), 30) if iterations is None else int(iterations)
    if m < k:
        raise ValueError(f"iterations must be >= k = {k} (a Krylov space of m vectors has m Ritz values); got {m}")
    m = min(m, size)
    if start is None:
        keys = _keys(seed, members, n_members)
        starts = jax.vmap(lambda key: jax.random.normal(key, (size,), flats.dtype))(keys)
    else:
        starts = _per_member(start, n_members, size, flats.dtype, "start")
    alphas, betas, bases = over_members(lanczos_steps, objective, unravel, flats, starts, _scales(scale, flats),
                                        _arrays(data), m)
    values, residuals, vectors = [], [], []
    for alpha, beta, basis in zip(np.asarray(alphas), np.asarray(betas), np.asarray(bases)):
        theta, s, bound = ritz(alpha, beta)
        top = np.arange(m - 1, m - 1 - k, -1)
        values.append(theta[top])
        residuals.append(bound[top])
        vectors.append((basis.T @ s[:, top]).T)
    return TopK(np.array(values), np.array(residuals), np.array(vectors), m)


@float64
def trace(objective: Objective, params, data, *, method: str = "hutch++", products: int = 60, seed: int = 0,
          scale=None) -> TraceEstimate:
    """A stochastic estimate of the trace of the training loss's Hessian at ``params``, with its standard error.

    Keyword arguments:
        method: ``"hutch++"`` (default) or ``"hutchinson"``.
        products: Hessian-vector products to spend (Hutchinson >= 2, Hutch++ >= 4).
        seed: for the Rademacher probes.
        scale: flat s: the trace of ``diag(s) H diag(s)``.

    Formulas, with Rademacher probes z (``E[z z^T] = I``):
        Hutchinson: ``tr H ~ (1/n) sum_l z_l^T H z_l``.
        Hutch++ with n products: ``q = n // 3`` probes S give ``Q = orth(H S)``; then
        ``tr H ~ tr(Q^T H Q) + (1/g) sum_l z_l^T (I - QQ^T) H (I - QQ^T) z_l`` over the ``g = n - 2q`` other
        probes: exact on the top of the spectrum, stochastic only on the rest, so its error falls like 1/n instead
        of 1/sqrt(n) when the spectrum decays (Meyer et al. 2021, arXiv:2010.09649).
    """
    result = trace_ensemble(objective, _stack(params), data, method=method, products=products, seed=seed,
                            scale=None if scale is None else np.asarray(scale)[None])
    return TraceEstimate(result.estimate[0], result.stderr[0], result.products, result.method)


@float64
def trace_ensemble(objective: Objective, params, data, *, method: str = "hutch++", products: int = 60,
                   seed: int = 0, scale=None, members=None) -> TraceEstimate:
    """``trace`` for K networks stacked on a leading axis of ``params`` (``scale``: None or (K, P); ``members``:
    see ``top_k_ensemble``)."""
    if method not in TRACE_METHODS:
        raise ValueError(f"unknown trace method {method!r}; choose one of {list(TRACE_METHODS)}")
    least = 4 if method == "hutch++" else 2
    if int(products) != products or products < least:
        raise ValueError(f"{method} needs an integer products >= {least} (for a standard error); got {products}")
    flats, unravel = _flatten(params)
    n_members, size = flats.shape
    sketch = min(int(products) // 3, size) if method == "hutch++" else 0
    spent = int(products) - (int(products) // 3 - sketch) * 2 if method == "hutch++" else int(products)
    keys = _keys(seed, members, n_members)
    estimate, stderr = _trace_many(objective, unravel, flats, keys, _scales(scale, flats), _arrays(data),
                                   int(products), sketch)
    return TraceEstimate(np.asarray(estimate), np.asarray(stderr), spent, method)


@partial(jax.jit, static_argnums=(0, 1, 6, 7))
def _trace_many(objective, unravel, flats, keys, scales, data, products, sketch):
    def one(flat, key, scale):
        _, hvp = hessian_vector_product(objective, unravel(flat), data, scale)
        n_probes = products - 2 * (products // 3) if sketch else products
        probes = jax.random.rademacher(key, (n_probes, flat.size), flat.dtype)
        exact = 0.0
        if sketch:
            sketches = jax.random.rademacher(jax.random.fold_in(key, 1), (sketch, flat.size), flat.dtype)
            q, _ = jnp.linalg.qr(jax.lax.map(hvp, sketches).T)  # P x sketch, orthonormal
            exact = jnp.sum(q.T * jax.lax.map(hvp, q.T))
            probes = probes - (probes @ q) @ q.T
        forms = jnp.sum(probes * jax.lax.map(hvp, probes), axis=1)
        return exact + jnp.mean(forms), jnp.std(forms, ddof=1) / jnp.sqrt(forms.size)

    if scales is None:
        return jax.vmap(lambda f, k: one(f, k, None))(flats, keys)
    return jax.vmap(one)(flats, keys, scales)


@float64
def density(objective: Objective, params, data, *, steps: int = 80, probes: int = 8, seed: int = 0,
            scale=None) -> SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian's spectral density at ``params`` (one network).

    Keyword arguments:
        steps: Lanczos steps m per probe (at most P); the quadrature integrates polynomials of degree up to 2m - 1
            exactly for each probe.
        probes: random unit vectors v = z / sqrt(P), z Rademacher (>= 2 for a standard error).
        seed: for the probes.
        scale: flat s: the density of ``diag(s) H diag(s)``.

    Formula (Ghorbani, Krishnan, Xiao 2019, arXiv:1901.10159; Golub and Meurant): for each probe,
    ``v^T f(H) v ~ sum_j w_j f(theta_j)``, theta_j the eigenvalues of the m x m Lanczos matrix T started at v and
    ``w_j`` the squared first components of its eigenvectors; since ``E[v^T f(H) v] = tr f(H) / P``, the mean over
    probes of these discrete measures estimates ``mu = (1/P) sum_i delta(x - lambda_i)``.
    """
    result = density_ensemble(objective, _stack(params), data, steps=steps, probes=probes, seed=seed,
                              scale=None if scale is None else np.asarray(scale)[None])
    return SpectralDensity(result.nodes[0], result.weights[0], result.size, result.products)


@float64
def density_ensemble(objective: Objective, params, data, *, steps: int = 80, probes: int = 8, seed: int = 0,
                     scale=None, members=None) -> SpectralDensity:
    """``density`` for K networks stacked on a leading axis of ``params`` (``scale``: None or (K, P); ``members``:
    see ``top_k_ensemble``); the probes of a member run one after another, so memory holds one Lanczos basis each."""
    for name, value in (("steps", steps), ("probes", probes)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value}")
    flats, unravel = _flatten(params)
    n_members, size = flats.shape
    m = min(int(steps), size)
    keys = _keys(seed, members, n_members)
    alphas, betas = _slq_many(objective, unravel, flats, keys, _scales(scale, flats), _arrays(data), int(probes), m)
    nodes, weights = np.empty(alphas.shape), np.empty(alphas.shape)
    for index in np.ndindex(alphas.shape[:2]):
        theta, s, _ = ritz(alphas[index], betas[index])
        nodes[index], weights[index] = theta, s[0] ** 2
    return SpectralDensity(nodes, weights, size, int(probes) * m)


@partial(jax.jit, static_argnums=(0, 1, 6, 7))
def _slq_many(objective, unravel, flats, keys, scales, data, probes, m):
    def one(flat, key, scale):
        _, hvp = hessian_vector_product(objective, unravel(flat), data, scale)
        starts = jax.random.rademacher(key, (probes, flat.size), flat.dtype)
        return jax.lax.map(lambda z: lanczos(hvp, z, m)[:2], starts)

    if scales is None:
        return jax.vmap(lambda f, k: one(f, k, None))(flats, keys)
    return jax.vmap(one)(flats, keys, scales)


def density_moments(result: SpectralDensity, orders=(0, 1, 2, 3, 4)) -> tuple[np.ndarray, np.ndarray]:
    """``(estimate, stderr)`` of the moments ``int x^j dmu = tr(H^j) / P`` for each j in ``orders``, shape
    (..., len(orders)): per probe ``sum_i w_i theta_i^j`` (exact for that probe when j <= 2 steps - 1), then the
    mean over probes and its standard error (the probes' standard deviation / sqrt(probes); with few probes that is
    itself uncertain, so a t quantile with probes - 1 degrees of freedom is the safer multiplier). NaN for orders
    above 2 steps - 1, where the quadrature is no longer exact per probe."""
    orders = np.asarray(orders)
    if orders.ndim != 1 or np.any(orders < 0) or np.any(orders != np.round(orders)):
        raise ValueError(f"orders must be a list of integers >= 0; got {orders.tolist()}")
    per_probe = np.sum(result.weights[..., None] * result.nodes[..., None] ** orders, axis=-2)
    n = per_probe.shape[-2]
    stderr = np.std(per_probe, axis=-2, ddof=1) / np.sqrt(n) if n > 1 else np.full(per_probe.shape[-1:], np.nan)
    exact = orders <= 2 * result.nodes.shape[-1] - 1  # beyond, an m-point quadrature is biased: not given
    return np.where(exact, per_probe.mean(axis=-2), np.nan), np.where(exact, stderr, np.nan)


def broadened_density(result: SpectralDensity, grid, *, sigma: float | None = None) -> np.ndarray:
    """The density ``phi(x) = (1/n) sum_l sum_j w_lj N(x; theta_lj, sigma^2)`` on ``grid``: the quadrature's point
    masses, each a Gaussian of width sigma (Ghorbani et al. 2019, eq. 5), averaged over the n probes; it integrates
    to 1. ``sigma`` default: 1 % of the span of the nodes. Shape (..., len(grid))."""
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"grid must be a non-empty 1-D array of points; got shape {grid.shape}")
    if sigma is None:
        sigma = 0.01 * float(np.ptp(result.nodes)) or 1.0
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    gauss = np.exp(-0.5 * ((grid - result.nodes[..., None]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return np.sum(result.weights[..., None] * gauss, axis=-2).mean(axis=-2)


def _stack(params):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], params)


def _flatten(params):
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or any(jnp.ndim(x) < 1 or jnp.shape(x)[0] != jnp.shape(leaves[0])[0] for x in leaves):
        raise ValueError("params must be a pytree of arrays stacked on a leading member axis of one length K")
    flats = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    return flats, ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], params))[1]


def _keys(seed, members, n_members):
    members = np.arange(n_members) if members is None else np.asarray(members)
    if members.shape != (n_members,):
        raise ValueError(f"members must give one index per member ({n_members}); got shape {members.shape}")
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.asarray(members))


def _per_member(vectors, n_members, size, dtype, name):
    vectors = jnp.asarray(vectors, dtype=dtype)
    if vectors.shape != (n_members, size):
        raise ValueError(f"{name} must be one flat vector of the {size} parameters per member, shape "
                         f"({n_members}, {size}); got {vectors.shape}")
    return vectors


def _scales(scale, flats):
    return None if scale is None else _per_member(scale, *flats.shape, flats.dtype, "scale")


def _arrays(data):
    return jax.tree_util.tree_map(jnp.asarray, data)
