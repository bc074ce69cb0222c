"""The Hessian of the training loss, matrix-free: Hessian-vector products (``jax.linearize`` of the gradient,
forward over reverse; the Hessian is never formed) and the one Lanczos loop with full re-orthogonalisation behind
the sharpness (``chaosgd.sharpness``) and the spectrum (``chaosgd.spectrum``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chaosgd.objective import Objective
from chaosgd.precision import float64


@float64
def hessian_vector_product(objective: Objective, params, data, scale=None):
    """``(flat_params, hvp)`` where ``hvp(v) = H(params) v`` for flat vectors v (jit-friendly); with a flat
    ``scale`` s, ``hvp(v) = s * H (s * v)``, the product with ``diag(s) H diag(s)`` (``s = P^-1/2`` gives the
    preconditioned Hessian's eigenvalues, those of ``P^-1 H``)."""
    flat, unravel = ravel_pytree(params)

    def grad_flat(theta):
        return ravel_pytree(jax.grad(lambda p: objective.loss(p, data)[0])(unravel(theta)))[0]

    _, hvp = jax.linearize(grad_flat, flat)
    if scale is None:  # (the product is called later, maybe outside this call: it computes in float64 too)
        return flat, float64(hvp)
    return flat, float64(lambda v: scale * hvp(scale * v))


@partial(jax.jit, static_argnums=(0, 1, 2, 7))
def over_members(method, objective, unravel, flats, starts, scales, data, iterations):
    """``method`` (``power_steps`` or ``lanczos_steps``) for every member of an ensemble (flat parameters stacked
    on a leading axis), in one compiled, vectorised call."""
    if scales is None:
        return jax.vmap(lambda f, s: method(objective, unravel, f, s, None, data, iterations))(flats, starts)
    return jax.vmap(lambda f, s, c: method(objective, unravel, f, s, c, data, iterations))(flats, starts, scales)


def power_steps(objective, unravel, flat, start, scale, data, iterations):
    _, hvp = hessian_vector_product(objective, unravel(flat), data, scale)
    v0 = start / jnp.linalg.norm(start)

    def body(_, v):
        w = hvp(v)
        return w / jnp.linalg.norm(w)

    v = jax.lax.fori_loop(0, iterations - 1, body, v0)
    hv = hvp(v)
    value = v @ hv
    return value, v, jnp.linalg.norm(hv - value * v)


def lanczos_steps(objective, unravel, flat, start, scale, data, m):
    """m Lanczos steps on the Hessian of one network (``lanczos``): diagonal alpha, off-diagonal beta, basis V
    (m x P)."""
    _, hvp = hessian_vector_product(objective, unravel(flat), data, scale)
    return lanczos(hvp, start, m)


# A new Lanczos direction shorter than this times the vectors it came from is roundoff (sqrt of float64's
# epsilon: its orthogonality and the coupling dropped are both at that level).
BREAKDOWN = 1.5e-8


@float64
def lanczos(matvec, start, m: int):
    """m steps of Lanczos with full re-orthogonalisation on a symmetric linear map (jit- and vmap-friendly): the
    tridiagonal matrix T (diagonal ``alpha``, off-diagonal ``beta[:-1]``), the last ``beta[-1]`` and the
    orthonormal basis V (m x P) with ``A V^T = V^T T + beta[-1] v_{m+1} e_m^T`` (Lanczos 1950,
    doi:10.6028/jres.045.026; Paige 1971 for the residual bound ``|beta[-1] s_mi|`` of Ritz pair i).

    One product with the map per step. The one loop behind the sharpness (top-1) and ``chaosgd.spectrum`` (top-k,
    stochastic Lanczos quadrature). When the start's Krylov space is exhausted (an invariant subspace: the new
    direction's norm beta falls below ``BREAKDOWN`` times the size of what it was computed from), what is left is
    roundoff, and normalising it would give a vector that is not orthogonal to the basis and Ritz values that are
    not eigenvalues. The step then sets beta to 0 and continues from a fresh pseudo-random direction orthogonal to
    the basis: T splits into blocks, each exact for its own invariant subspace, and a quadrature started from v
    (whose weights are the first components) gives the new block no weight.
    """
    basis = jnp.zeros((m, start.size), dtype=start.dtype).at[0].set(start / jnp.linalg.norm(start))
    restart = jax.random.PRNGKey(0)

    def body(i, state):
        basis, alpha, beta = state
        v = basis[i]
        w = matvec(v)
        size = jnp.maximum(jnp.linalg.norm(w), jnp.where(i > 0, beta[i - 1], 0.0))
        a = v @ w
        w = w - a * v - jnp.where(i > 0, beta[i - 1], 0.0) * basis[jnp.maximum(i - 1, 0)]
        # Full re-orthogonalisation against every earlier vector (twice is enough) keeps the Ritz values clean. Rows
        # past i are still zero, so the whole basis can take part without a mask (no m x P copy per step).
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        b = jnp.linalg.norm(w)
        broken = b <= BREAKDOWN * size
        fresh = jax.random.normal(jax.random.fold_in(restart, i), w.shape, w.dtype)
        for _ in range(2):
            fresh = fresh - basis.T @ (basis @ fresh)
        following = jnp.where(broken, fresh / jnp.linalg.norm(fresh), w / jnp.where(b > 0, b, 1.0))
        b = jnp.where(broken, 0.0, b)
        basis = basis.at[jnp.minimum(i + 1, m - 1)].set(jnp.where(i + 1 < m, following, basis[m - 1]))
        return basis, alpha.at[i].set(a), beta.at[i].set(b)

    alpha = jnp.zeros(m, dtype=start.dtype)
    beta = jnp.zeros(m, dtype=start.dtype)
    basis, alpha, beta = jax.lax.fori_loop(0, m, body, (basis, alpha, beta))
    return alpha, beta, basis


def ritz(alpha, beta):
    """Ritz values (ascending), eigenvectors S of T, and residual bounds ``|beta_m s_mi|`` from ``lanczos``'s
    output (numpy, one run); NaN throughout when the run is not finite (a diverged network)."""
    alpha, beta = np.asarray(alpha), np.asarray(beta)
    if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))):
        return np.full(alpha.size, np.nan), np.full((alpha.size, alpha.size), np.nan), np.full(alpha.size, np.nan)
    tri = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
    values, s = np.linalg.eigh(tri)
    return values, s, np.abs(beta[-1] * s[-1])
