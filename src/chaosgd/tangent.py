"""Tangent-space Lyapunov exponents of the gradient-descent map (beyond the paper).

The GD map ``theta -> theta - eta grad L(theta)`` has Jacobian ``J = I - eta H(theta)``. Tangent vectors are carried
along the trajectory with Hessian-vector products (``jax.linearize`` of the gradient, forward over reverse: no
Hessian is ever formed), re-orthonormalised by QR at every step (Benettin et al. 1980; Shimada & Nagashima 1979).
The logs of the diagonal of R are the per-step growth rates of the top-k directions; their running means are the
finite-time exponents, their mean over a horizon the infinitesimal exponent there.

Unlike the epsilon-ball estimator this needs no epsilon and no float64 headroom and never saturates, so it also
measures the exponent after the transient; the epsilon-ball estimator is what the paper measures, it is cheaper per
copy, and its saturation time tau says how long the chaotic transient lasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from chaosgd.objective import Objective


@dataclass(frozen=True)
class TangentExponents:
    """Per-step log growth ``log_growth[t, i] = ln|R_ii|`` of the i-th direction at step t (t = 0 .. T-1).

    NaN from the step at which the trajectory stopped being finite.
    """

    log_growth: np.ndarray
    eta: float

    @property
    def finite_time(self) -> np.ndarray:
        """Finite-time exponents ``lambda_i(t) = (1/t) sum_{s<t} ln|R_ii(s)|``, shape (T, k), t = 1 .. T."""
        return np.cumsum(self.log_growth, axis=0) / np.arange(1, self.log_growth.shape[0] + 1)[:, None]

    def over(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The exponents over the horizon ``[start, stop)`` of steps: mean log growth there, one per direction."""
        return self.log_growth[start:stop].mean(axis=0)


def tangent_exponents(objective: Objective, params, eta: float, data, *, epochs: int, k: int = 1,
                      seed: int = 0) -> TangentExponents:
    """Top-``k`` tangent-space exponents along the GD trajectory of one network started at ``params``.

    The initial tangent directions are random (from ``seed``) and orthonormalised.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if not eta > 0:
        raise ValueError(f"eta must be > 0; got {eta}")
    flat, unravel = ravel_pytree(params)
    if k > flat.size:
        raise ValueError(f"k = {k} exceeds the number of parameters {flat.size}")
    q0, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((flat.size, k)))
    data = jax.tree_util.tree_map(jnp.asarray, data)
    growth = _tangent_scan(objective, unravel, flat, jnp.asarray(q0, dtype=flat.dtype),
                           jnp.asarray(eta, dtype=flat.dtype), data, int(epochs))
    return TangentExponents(np.asarray(growth), float(eta))


@partial(jax.jit, static_argnums=(0, 1, 6))
def _tangent_scan(objective, unravel, theta, q, eta, data, epochs):
    def grad_flat(theta):
        return ravel_pytree(jax.grad(lambda p: objective.loss(p, data)[0])(unravel(theta)))[0]

    def body(carry, _):
        theta, q, alive = carry
        g, hvp = jax.linearize(grad_flat, theta)
        v = q - eta * jax.vmap(hvp, in_axes=1, out_axes=1)(q)  # J q = (I - eta H) q
        q_next, r = jnp.linalg.qr(v)
        growth = jnp.log(jnp.abs(jnp.diagonal(r)))
        theta_next = theta - eta * g
        alive = alive & jnp.all(jnp.isfinite(theta_next)) & jnp.all(jnp.isfinite(growth))
        keep = lambda new, old: jnp.where(alive, new, old)  # noqa: E731  frozen after divergence
        return (keep(theta_next, theta), keep(q_next, q), alive), jnp.where(alive, growth, jnp.nan)

    _, growth = jax.lax.scan(body, (theta, q, jnp.bool_(True)), None, length=epochs)
    return growth
