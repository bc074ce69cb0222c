"""Tangent-space Lyapunov exponents of the training map (beyond the paper).

The GD map ``theta -> theta - eta grad L(theta)`` has Jacobian ``J = I - eta H(theta)``; with an optimiser the map
acts on parameters and optimiser state together (momentum, Adam's moments), and with minibatches an epoch is many
steps: the tangent map is the Jacobian of that whole epoch. Tangent vectors are carried along the trajectory with
Jacobian-vector products (``jax.linearize`` of the epoch map, forward over reverse: no Hessian is ever formed),
re-orthonormalised by QR at every epoch (Benettin et al. 1980; Shimada & Nagashima 1979).
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

from chaosgd.dynamics import FULL_BATCH_GD, UpdateRule, member_epoch
from chaosgd.objective import Objective
from chaosgd.precision import float64


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

    def slope(self, start: int, stop: int) -> np.ndarray:
        """The epsilon-ball's estimator applied to the tangent vectors: the least-squares slope of their log growth
        ``y(t) = sum_{s<t} ln|R_ii(s)|`` over epochs ``start .. stop`` (inclusive, as ``lyapunov.local_exponent``'s
        window), one per direction. Where growth is not uniform over the window (Adam's first epochs stretch far
        more than its later ones) this, not ``over``'s mean, is what to compare with an epsilon-ball exponent."""
        y = np.vstack([np.zeros((1, self.log_growth.shape[1])), np.cumsum(self.log_growth, axis=0)])
        return np.polyfit(np.arange(start, stop + 1), y[start:stop + 1], 1)[0]


@float64
def tangent_exponents(objective: Objective, params, eta: float, data, *, epochs: int, k: int = 1,
                      seed: int = 0, rule: UpdateRule | None = None, initial_condition: int = 0) -> TangentExponents:
    """Top-``k`` tangent-space exponents along the training trajectory of one network started at ``params``.

    ``rule``: the optimiser and minibatches (``dynamics.UpdateRule``; default full-batch GD); the tangent space is
    that of parameters and optimiser state together, which starts from the optimiser's initial state.
    ``initial_condition``: whose minibatch order and dropout masks the trajectory follows (as in a sweep). The
    initial tangent directions are random (from ``seed``) and orthonormalised.
    """
    rule = FULL_BATCH_GD if rule is None else rule
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if not eta > 0:
        raise ValueError(f"eta must be > 0; got {eta}")
    state = (params, rule.optimizer.init(params))
    leaves, treedef = jax.tree_util.tree_flatten(state)
    moving = [jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact) for x in leaves]  # not step counters
    flat, unravel = ravel_pytree([x for x, m in zip(leaves, moving) if m])
    n_params = ravel_pytree(params)[0].size  # the parameters come first in the flat state
    if k > n_params:
        raise ValueError(f"k = {k} exceeds the number of parameters {n_params}")
    # Initial directions over the parameters, the optimiser state unperturbed (as the epsilon-ball starts them).
    start = np.zeros((flat.size, k))
    start[:n_params] = np.random.default_rng(seed).standard_normal((n_params, k))
    q0, _ = np.linalg.qr(start)
    data = jax.tree_util.tree_map(jnp.asarray, data)
    n_train = data["x_train"].shape[0] if isinstance(data, dict) and "x_train" in data else 0
    counters = [x for x, m in zip(leaves, moving) if not m]
    growth = _tangent_scan((objective, rule, n_train, int(epochs) if rule.optimizer.schedule != "constant" else 0),
                           (treedef, tuple(moving), unravel), flat, counters, jnp.asarray(q0, dtype=flat.dtype),
                           jnp.asarray(eta, dtype=flat.dtype), data, jnp.int32(initial_condition), int(epochs))
    return TangentExponents(np.asarray(growth), float(eta))


@partial(jax.jit, static_argnums=(0, 1, 8))
def _tangent_scan(program, layout, theta, counters, q, eta, data, ic, epochs):
    epoch = member_epoch(*program)
    treedef, moving, unravel = layout

    def state_of(theta, counters):
        inexact, others = iter(unravel(theta)), iter(counters)
        return jax.tree_util.tree_unflatten(treedef, [next(inexact) if m else next(others) for m in moving])

    def split(state):
        leaves = jax.tree_util.tree_leaves(state)
        return (ravel_pytree([x for x, m in zip(leaves, moving) if m])[0],
                [x for x, m in zip(leaves, moving) if not m])

    def body(carry, t):
        theta, counters, q, alive = carry

        def step(theta):
            params, opt = state_of(theta, counters)
            new_params, new_opt, _, _ = epoch(params, opt, eta, data, ic, 0, t)
            return split((new_params, new_opt))

        theta_next, jvp, counters_next = jax.linearize(step, theta, has_aux=True)
        v = jax.vmap(jvp, in_axes=1, out_axes=1)(q)  # J q
        # A NaN in J q at a coordinate of the state that did not move is 0 * inf from a point where the map is not
        # differentiable but cannot move: Adam's second moment at exactly 0 (sqrt'(0) = inf) for weights that have
        # never had a gradient (MNIST's blank pixels), whose moments and gradient stay 0 along every direction. The
        # derivative there is 0; any other NaN stays and ends the estimate.
        v = jnp.where(jnp.isnan(v) & (theta_next == theta)[:, None], 0.0, v)
        q_next, r = jnp.linalg.qr(v)
        growth = jnp.log(jnp.abs(jnp.diagonal(r)))
        alive = alive & jnp.all(jnp.isfinite(theta_next)) & jnp.all(jnp.isfinite(growth))
        keep = lambda new, old: jnp.where(alive, new, old)  # noqa: E731  frozen after divergence
        carry = (keep(theta_next, theta), jax.tree_util.tree_map(keep, counters_next, counters), keep(q_next, q),
                 alive)
        return carry, jnp.where(alive, growth, jnp.nan)

    _, growth = jax.lax.scan(body, (theta, counters, q, jnp.bool_(True)), jnp.arange(epochs, dtype=jnp.int32))
    return growth
