"""Initial conditions S and the epsilon-balls around them, as stacked parameter pytrees.

Every random draw comes from ``seed`` and an initial condition's index, so any initial condition of a sweep can be
re-created alone: initial condition ``i`` uses ``fold_in(PRNGKey(seed), i)``, its weights ``fold_in(that, 0)`` and the
perturbation of its copy ``j`` comes from numpy's generator seeded with ``[seed, i, j]``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from chaosgd.defaults import EPSILON_MAX
from chaosgd.models.base import Model, weight_mask
from chaosgd.precision import float64

PERTURB_MODES = ("all", "weights")


@float64
def initial_conditions(model: Model, n_initial: int, *, seed: int = 0, first: int = 0):
    """``n_initial`` independent initialisations of ``model``, stacked on a leading axis.

    They are initial conditions ``first, ..., first + n_initial - 1`` of the sequence that ``seed`` defines.
    """
    if n_initial < 1:
        raise ValueError(f"n_initial must be >= 1; got {n_initial}")
    if not 0 <= first <= 2**32 - n_initial:  # (an index is folded into the key as 32 bits)
        raise ValueError(f"initial conditions first .. first + n_initial - 1 must lie in [0, 2^32 - 1]; got first = "
                         f"{first}, n_initial = {n_initial}")
    root = jax.random.PRNGKey(seed)
    # One compiled initialisation per model, called once per initial condition: a program over all n_initial at
    # once was compiled again for every count (a sweep's last, smaller block; each test's ensemble), at twice the
    # compile time; the values are the same to the bit.
    members = [_initialise(model, jax.random.fold_in(root, first + i)) for i in range(n_initial)]
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *members)


@partial(jax.jit, static_argnums=0)
def _initialise(model, key):
    return model.init(jax.random.fold_in(key, 0))


@float64
def check_epsilon(params, epsilon: float, perturb: str = "all") -> None:
    """Refuse an epsilon that the parameters' dtype cannot represent at their scale, or that is not small against
    it (above ``defaults.EPSILON_MAX`` times the weights' typical size).

    A perturbation at or below ``rms(w) * finfo(dtype).eps`` is lost in rounding when added to weights of size
    ``rms(w)`` (for example epsilon = 1e-8 on N(0, 1) weights in float32), so the "ball" would collapse to its centre.
    """
    if perturb not in PERTURB_MODES:
        raise ValueError(f"unknown perturb mode {perturb!r}; choose one of {list(PERTURB_MODES)}")
    if not np.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0; got {epsilon}")
    if epsilon == 0:
        return
    weights = [np.asarray(p) for p, is_w in zip(jax.tree_util.tree_leaves(params),
                                                jax.tree_util.tree_leaves(weight_mask(params))) if is_w]
    if not weights:
        return
    dtype = weights[0].dtype
    scale = float(np.sqrt(np.mean(np.concatenate([w.ravel() ** 2 for w in weights]))))
    resolution = scale * float(np.finfo(dtype).eps)
    if epsilon <= resolution:
        raise ValueError(
            f"epsilon = {epsilon:g} is at or below the resolution of {dtype} for weights of typical size "
            f"{scale:.3g} (about {resolution:.2g}): the perturbation would be rounded away. Use float64 parameters "
            f"(the default) or an epsilon well above {resolution:.2g}.")
    if epsilon > EPSILON_MAX * scale:
        raise ValueError(
            f"epsilon = {epsilon:g} is not small against weights of typical size {scale:.3g}: the copies would start "
            f"too far apart for an exponential phase to be measured; use at most {EPSILON_MAX:g} x that "
            f"({EPSILON_MAX * scale:.2g}); the paper's is 1e-8.")


@float64
def epsilon_ball(centres, n_copies: int, *, epsilon: float = 1e-8, perturb: str = "all", seed: int = 0,
                 first: int = 0):
    """Stack ``1 + n_copies`` networks around each centre: copy 0 is the centre itself, copies 1..M add U(-eps, eps).

    ``centres`` are stacked initial conditions (leading axis S, as returned by ``initial_conditions`` with the same
    ``seed`` and ``first``); the result has leading axes ``(S, 1 + n_copies)``. ``perturb="all"`` perturbs every
    trainable parameter (the paper's text), ``"weights"`` leaves biases untouched (the paper's public code).
    """
    if n_copies < 0:
        raise ValueError(f"n_copies must be >= 0; got {n_copies}")
    check_epsilon(centres, epsilon, perturb)
    leaves, treedef = jax.tree_util.tree_flatten(centres)
    is_weight = jax.tree_util.tree_leaves(weight_mask(jax.tree_util.tree_map(lambda x: x[0], centres)))
    n_ic = leaves[0].shape[0]
    out = [np.repeat(np.asarray(leaf)[:, None], 1 + n_copies, axis=1) for leaf in leaves]
    if epsilon > 0:
        for i in range(n_ic):
            for j in range(1, 1 + n_copies):
                # numpy's generator seeded by (seed, initial condition, copy): cheap, and independent of S.
                rng = np.random.default_rng([seed, first + i, j])
                for leaf, w in zip(out, is_weight):
                    if w or perturb == "all":
                        noise = rng.uniform(-epsilon, epsilon, size=leaf.shape[2:])
                        leaf[i, j] += noise.astype(leaf.dtype)
    return jax.tree_util.tree_unflatten(treedef, out)


@float64
def over_learning_rates(ball, etas):
    """Repeat an ensemble (leading axes ``(S, 1 + M)``) once per learning rate, so every eta sees the same S.

    Returns ``(params, eta, initial_condition)`` for ``engine.run``: groups are ordered eta-major, group
    ``k * S + i`` being initial condition ``i`` at ``etas[k]``.
    """
    etas = np.asarray(etas, dtype=float).ravel()
    n_ic = jax.tree_util.tree_leaves(ball)[0].shape[0]
    params = jax.tree_util.tree_map(lambda x: np.concatenate([np.asarray(x)] * len(etas)), ball)
    return params, np.repeat(etas, n_ic), np.tile(np.arange(n_ic), len(etas))
