"""Sharpness: the largest eigenvalue of the training loss's Hessian, compared with 2/eta (the paper's Appendix C,
after Cohen et al., "Gradient descent on neural networks typically occurs at the edge of stability", 2021).

Hessian-vector products come from ``jax.linearize`` of the gradient (forward over reverse); the Hessian is never
formed. Two methods:

- ``"lanczos"`` (default): m steps of Lanczos with full re-orthogonalisation, in one compiled loop; the largest
  Ritz value of the tridiagonal matrix is the largest *algebraic* eigenvalue, and its residual bound says how far
  it can be off.
- ``"power"``: power iteration (the paper's method). It converges to the eigenvalue largest in *absolute* value,
  which can be a negative one far from the top; the result flags that case.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chaosgd.dynamics import FULL_BATCH_GD, member_epoch
from chaosgd.objective import Objective

METHODS = ("lanczos", "power")


@dataclass(frozen=True)
class TopEigenvalue:
    """Result of one eigenvalue estimate.

    Attributes:
        value: the estimate of the top eigenvalue (largest algebraic for Lanczos; largest in magnitude, with its
            sign, for power iteration).
        vector: the corresponding unit eigenvector estimate (flat, as ``ravel_pytree`` orders the parameters).
        residual: ``||H v - value v||``, a bound on the distance of ``value`` to the spectrum.
        products: Hessian-vector products spent.
        method: ``"lanczos"`` or ``"power"``.
        dominant_negative: power iteration only: True when the dominant eigenvalue it found is negative, so the
            largest algebraic eigenvalue (the sharpness) is something else; use Lanczos.
    """

    value: float
    vector: np.ndarray
    residual: float
    products: int
    method: str
    dominant_negative: bool = False


def hessian_vector_product(objective: Objective, params, data):
    """``(flat_params, hvp)`` where ``hvp(v) = H(params) v`` for flat vectors v (jit-friendly)."""
    flat, unravel = ravel_pytree(params)

    def grad_flat(theta):
        return ravel_pytree(jax.grad(lambda p: objective.loss(p, data)[0])(unravel(theta)))[0]

    _, hvp = jax.linearize(grad_flat, flat)
    return flat, hvp


def top_eigenvalue(objective: Objective, params, data, *, method: str = "lanczos", iterations: int = 30,
                   start=None, seed: int = 0) -> TopEigenvalue:
    """The top Hessian eigenvalue of the training loss at ``params`` (one network).

    Keyword arguments:
        method: ``"lanczos"`` (largest algebraic eigenvalue, default) or ``"power"`` (largest magnitude).
        iterations: Lanczos steps (Krylov dimension) or power iterations; each costs one Hessian-vector product.
        start: starting vector (flat); a previous eigenvector makes tracking along a trajectory converge faster.
        seed: for the random starting vector when ``start`` is None.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1; got {iterations}")
    return top_eigenvalues(objective, jax.tree_util.tree_map(lambda x: x[None], params), data, method=method,
                           iterations=iterations, start=None if start is None else np.asarray(start)[None],
                           seed=seed)[0]


def top_eigenvalues(objective: Objective, params, data, *, method: str = "lanczos", iterations: int = 30,
                    start=None, seed: int = 0) -> list[TopEigenvalue]:
    """``top_eigenvalue`` for a whole ensemble at once: ``params`` stacked on a leading axis of K members.

    All K estimates run in one compiled, vectorised loop; ``start`` is None or one flat vector per member.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1; got {iterations}")
    flats = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], params))
    n_members, size = flats.shape
    if start is None:
        start = np.random.default_rng(seed).standard_normal((n_members, size))
    starts = jnp.asarray(start, dtype=flats.dtype).reshape(n_members, size)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    if method == "power":
        values, vectors, residuals = _many(_power, objective, unravel, flats, starts, data, int(iterations))
        return [TopEigenvalue(float(v), np.asarray(vec), float(r), int(iterations), method, dominant_negative=v < 0)
                for v, vec, r in zip(np.asarray(values), np.asarray(vectors), np.asarray(residuals))]
    m = int(min(iterations, size))
    alphas, betas, bases = _many(_lanczos, objective, unravel, flats, starts, data, m)
    results = []
    for alpha, beta, basis in zip(np.asarray(alphas), np.asarray(betas), np.asarray(bases)):
        tri = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
        ritz, s = np.linalg.eigh(tri)
        residual = abs(beta[-1] * s[-1, -1])  # ||H V s - theta V s|| from the Lanczos relation
        results.append(TopEigenvalue(float(ritz[-1]), basis.T @ s[:, -1], float(residual), m, method))
    return results


@partial(jax.jit, static_argnums=(0, 1, 2, 6))
def _many(method, objective, unravel, flats, starts, data, iterations):
    return jax.vmap(lambda f, s: method(objective, unravel, f, s, data, iterations))(flats, starts)


@partial(jax.jit, static_argnums=(0, 1, 5))
def _power(objective, unravel, flat, start, data, iterations):
    _, hvp = hessian_vector_product(objective, unravel(flat), data)
    v0 = start / jnp.linalg.norm(start)

    def body(_, v):
        w = hvp(v)
        return w / jnp.linalg.norm(w)

    v = jax.lax.fori_loop(0, iterations - 1, body, v0)
    hv = hvp(v)
    value = v @ hv
    return value, v, jnp.linalg.norm(hv - value * v)


@partial(jax.jit, static_argnums=(0, 1, 5))
def _lanczos(objective, unravel, flat, start, data, m):
    """m Lanczos steps with full re-orthogonalisation: diagonal alpha, off-diagonal beta, basis V (m x P)."""
    _, hvp = hessian_vector_product(objective, unravel(flat), data)
    basis = jnp.zeros((m, flat.size), dtype=flat.dtype).at[0].set(start / jnp.linalg.norm(start))

    def body(i, state):
        basis, alpha, beta = state
        v = basis[i]
        w = hvp(v)
        a = v @ w
        w = w - a * v - jnp.where(i > 0, beta[i - 1], 0.0) * basis[jnp.maximum(i - 1, 0)]
        # Full re-orthogonalisation against every earlier vector (twice is enough) keeps the Ritz values clean.
        mask = (jnp.arange(m) <= i)[:, None]
        for _ in range(2):
            w = w - (basis * mask).T @ ((basis * mask) @ w)
        b = jnp.linalg.norm(w)
        basis = basis.at[jnp.minimum(i + 1, m - 1)].set(jnp.where(i + 1 < m, w / jnp.where(b > 0, b, 1.0),
                                                                  basis[m - 1]))
        return basis, alpha.at[i].set(a), beta.at[i].set(b)

    alpha = jnp.zeros(m, dtype=flat.dtype)
    beta = jnp.zeros(m, dtype=flat.dtype)
    basis, alpha, beta = jax.lax.fori_loop(0, m, body, (basis, alpha, beta))
    return alpha, beta, basis


@dataclass(frozen=True)
class SharpnessTrack:
    """Sharpness along one GD trajectory: ``value[i]`` at epoch ``epoch[i]``, with ``2 / eta`` to compare."""

    eta: float
    epoch: np.ndarray
    value: np.ndarray
    residual: np.ndarray
    loss: np.ndarray

    @property
    def edge_of_stability(self) -> float:
        return 2.0 / self.eta


def track_sharpness(objective: Objective, params, eta: float, data, *, epochs: int, every: int = 5,
                    method: str = "lanczos", iterations: int = 20, hessian_examples: int | None = None,
                    seed: int = 0) -> SharpnessTrack:
    """Top Hessian eigenvalue every ``every`` epochs along the GD trajectory of one network from ``params``.

    The trajectory runs on the full training set; the Hessian is that of the full training loss, or, with
    ``hessian_examples=n``, of the loss on a fixed random subset of n training examples (drawn once from ``seed``),
    which is cheaper and, for n of a few thousand, close. Each estimate starts from the previous eigenvector.
    Epochs at which the trajectory is no longer finite get NaN.
    """
    if every < 1 or epochs < 0:
        raise ValueError("need every >= 1 and epochs >= 0")
    data = jax.tree_util.tree_map(jnp.asarray, data)
    hessian_data = data
    if hessian_examples is not None:
        n = data["x_train"].shape[0]
        if not 0 < hessian_examples <= n:
            raise ValueError(f"hessian_examples must be in 1 .. {n}; got {hessian_examples}")
        pick = np.sort(np.random.default_rng(seed).choice(n, hessian_examples, replace=False))
        hessian_data = dict(data, x_train=data["x_train"][pick], y_train=data["y_train"][pick])
    eta_arr = jnp.asarray(eta, dtype=ravel_pytree(params)[0].dtype)
    epochs_out, values, residuals, losses = [], [], [], []
    start = None
    t = 0
    while True:
        loss = float(objective.loss(params, data)[0])
        if np.isfinite(loss):
            result = top_eigenvalue(objective, params, hessian_data, method=method, iterations=iterations,
                                    start=start, seed=seed)
            start = result.vector
            values.append(result.value)
            residuals.append(result.residual)
        else:
            values.append(np.nan)
            residuals.append(np.nan)
        epochs_out.append(t)
        losses.append(loss)
        if t >= epochs or not np.isfinite(loss):
            break
        n_steps = min(every, epochs - t)
        params = _advance(objective, params, eta_arr, data, n_steps)
        t += n_steps
    return SharpnessTrack(float(eta), np.array(epochs_out), np.array(values), np.array(residuals), np.array(losses))


@partial(jax.jit, static_argnums=(0, 4))
def _advance(objective, params, eta, data, n_steps):
    epoch = member_epoch(objective, FULL_BATCH_GD, 0, 0)
    return jax.lax.fori_loop(0, n_steps, lambda t, p: epoch(p, (), eta, data, 0, 0, t)[0], params)
