"""The engine: many epochs of full-batch gradient descent for a whole ensemble inside one compiled call.

Parameters are stacked pytrees with leading axes ``(groups, 1 + M)``: each group is a reference network (copy 0)
and its M perturbed copies. The members are flattened into one batch axis and the GD map is ``vmap``-ed over it, so
XLA sees one wide matrix product per layer instead of K narrow ones; ``lax.scan`` runs the epochs.
"""

from __future__ import annotations

import math
import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from chaosgd.gd import ensemble_step
from chaosgd.objective import Objective
from chaosgd.records import Records, concatenate

# The run is cut into at most this many compiled scans, for progress; results do not depend on it. Each call
# allocates the program's work buffers afresh (on CPU, page faults over hundreds of MB), so a scan is kept at least
# _MIN_SEGMENT epochs long to make that cost negligible.
_SEGMENTS = 20
_MIN_SEGMENT = 10


def run(objective: Objective, params, eta, data, *, epochs: int, initial_condition=None,
        groups_per_chunk: int | None = None, memory_budget: float | None = None, progress: bool = False) -> Records:
    """Train every member of an ensemble for ``epochs`` full-batch GD steps and record what DESIGN.md asks for.

    Args:
        objective: the loss and the test metric (``objective.classification(model)`` for the paper's networks).
        params: stacked parameters with leading axes ``(G, 1 + M)``; copy 0 of each group is its reference.
        eta: learning rates: a scalar, one per group ``(G,)``, or one per member ``(G, 1 + M)``.
        data: pytree passed to the objective (``Dataset.arrays()`` for classification).
        epochs: number of steps T; records hold t = 0 .. T.
        initial_condition: index of each group's initial condition, stored in the records (default 0 .. G-1).
        groups_per_chunk: run at most this many groups at once; default: as many as ``memory_budget`` allows.
        memory_budget: bytes a chunk may use; default half of the machine's memory (``CHAOSGD_MEMORY_BUDGET``).
        progress: show a progress bar over network-epochs.

    A member whose loss or parameters stop being finite is frozen and recorded as NaN from that epoch on
    (``Records.diverged_at``); the others go on. Results do not depend on the chunking beyond roundoff in the last
    bit (matrix products over a different number of members may round differently; see the README).
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0; got {epochs}")
    epochs = int(epochs)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or any(leaf.ndim < 2 for leaf in leaves):
        raise ValueError("params must be stacked with leading axes (groups, 1 + M); build them with "
                         "chaosgd.ensemble.epsilon_ball")
    n_groups, n_members = leaves[0].shape[:2]
    dtype = leaves[0].dtype
    eta = np.asarray(eta, dtype=dtype)
    eta = eta[:, None] if eta.ndim == 1 else eta
    try:
        eta = np.broadcast_to(eta, (n_groups, n_members)).copy()
    except ValueError:
        raise ValueError(f"eta must be a scalar, one per group ({n_groups},) or one per member "
                         f"({n_groups}, {n_members}); got shape {np.shape(eta)}") from None
    if not np.all(np.isfinite(eta)) or np.any(eta <= 0):
        raise ValueError(f"learning rates must be finite and > 0; got {np.unique(eta)}")
    ic = np.arange(n_groups) if initial_condition is None else np.asarray(initial_condition)
    if ic.shape != (n_groups,):
        raise ValueError(f"initial_condition must have one entry per group ({n_groups}); got shape {ic.shape}")

    data = jax.tree_util.tree_map(jnp.asarray, data)
    if groups_per_chunk is None:
        groups_per_chunk = _groups_that_fit(objective, params, data, n_members, memory_budget)
    groups_per_chunk = max(1, min(int(groups_per_chunk), n_groups))

    bar = _progress_bar(n_groups * n_members * epochs, progress)
    parts = []
    for start in range(0, n_groups, groups_per_chunk):
        stop = min(start + groups_per_chunk, n_groups)
        chunk = jax.tree_util.tree_map(lambda x: jnp.asarray(x[start:stop]), params)
        parts.append(_run_chunk(objective, chunk, eta[start:stop], ic[start:stop], data, epochs, bar))
    if bar is not None:
        bar.close()
    return concatenate(parts)


def _run_chunk(objective, params, eta, ic, data, epochs, bar) -> Records:
    n_groups, n_members = eta.shape
    alive = jnp.ones((n_groups, n_members), dtype=bool)
    diverged_at = jnp.full((n_groups, n_members), -1, dtype=jnp.int32)
    eta_dev = jnp.asarray(eta)
    pieces = []
    seg = max(_MIN_SEGMENT, math.ceil(epochs / _SEGMENTS))
    for t0 in range(0, epochs, seg):
        length = min(seg, epochs - t0)
        (params, alive, diverged_at), recs = _segment(objective, params, alive, diverged_at, eta_dev, data,
                                                      jnp.int32(t0), length)
        pieces.append(jax.device_get(recs))
        if bar is not None:
            bar.update(n_groups * n_members * length)
    final, diverged_at = _final(objective, params, alive, diverged_at, data, jnp.int32(epochs))
    pieces.append(jax.tree_util.tree_map(lambda x: x[None], jax.device_get(final)))
    loss, train_acc, test_acc, dist = (np.moveaxis(np.concatenate([p[i] for p in pieces]), 0, -1)
                                       for i in range(4))
    return Records(eta=eta, initial_condition=ic, loss=loss, train_accuracy=train_acc, test_accuracy=test_acc,
                   distance=dist, diverged_at=np.asarray(diverged_at))


def _flat(tree):
    return jax.tree_util.tree_map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), tree)


def _unflat(tree, n_groups):
    return jax.tree_util.tree_map(lambda x: x.reshape(n_groups, -1, *x.shape[1:]), tree)


def _observe(objective, params, alive, diverged_at, loss, acc, data, t):
    """Masked records of theta(t) from its loss and accuracy; marks members whose loss is not finite at t."""
    valid = alive & jnp.isfinite(loss)
    diverged_at = jnp.where(alive & ~valid, t, diverged_at)
    reference = jax.tree_util.tree_map(lambda x: x[:, 0], params)
    test_acc = jax.vmap(objective.test_accuracy, in_axes=(0, None))(reference, data)
    dist = sum(jnp.abs(x[:, 1:] - x[:, :1]).reshape(x.shape[0], x.shape[1] - 1, math.prod(x.shape[2:])).sum(-1)
               for x in jax.tree_util.tree_leaves(params))
    nan = jnp.nan
    record = (jnp.where(valid, loss, nan), jnp.where(valid, acc, nan), jnp.where(valid[:, 0], test_acc, nan),
              jnp.where(valid[:, 1:] & valid[:, :1], dist, nan))
    return record, valid, diverged_at


@partial(jax.jit, static_argnums=(0, 7))
def _segment(objective, params, alive, diverged_at, eta, data, t0, length):
    step = ensemble_step(objective)
    n_groups = eta.shape[0]

    def body(carry, t):
        params, alive, diverged_at = carry
        new, loss, acc = step(_flat(params), eta.reshape(-1), data)
        new = _unflat(new, n_groups)
        loss, acc = loss.reshape(eta.shape), acc.reshape(eta.shape)
        record, valid, diverged_at = _observe(objective, params, alive, diverged_at, loss, acc, data, t)
        finite = jnp.all(jnp.stack([jnp.isfinite(x).reshape(*eta.shape, math.prod(x.shape[2:])).all(-1)
                                    for x in jax.tree_util.tree_leaves(new)]), axis=0)
        alive = valid & finite
        diverged_at = jnp.where(valid & ~finite, t + 1, diverged_at)
        params = jax.tree_util.tree_map(
            lambda x_new, x_old: jnp.where(alive.reshape(*alive.shape, *(1,) * (x_new.ndim - 2)), x_new, x_old),
            new, params)
        return (params, alive, diverged_at), record

    return jax.lax.scan(body, (params, alive, diverged_at), t0 + jnp.arange(length, dtype=jnp.int32))


@partial(jax.jit, static_argnums=(0,))
def _final(objective, params, alive, diverged_at, data, t):
    n_groups, n_members = alive.shape
    loss, acc = jax.vmap(objective.loss, in_axes=(0, None))(_flat(params), data)
    record, _, diverged_at = _observe(objective, params, alive, diverged_at, loss.reshape(n_groups, n_members),
                                      acc.reshape(n_groups, n_members), data, t)
    return record, diverged_at


def _groups_that_fit(objective, params, data, n_members, memory_budget) -> int:
    """Groups per chunk under ``memory_budget``, from the sizes of all intermediates of one member's step.

    Summing every intermediate of the traced program over-counts what XLA keeps alive at once, so this errs on the
    safe side.
    """
    if memory_budget is None:
        memory_budget = float(os.environ.get("CHAOSGD_MEMORY_BUDGET", 0)) or 0.5 * _machine_memory()
    one = jax.tree_util.tree_map(lambda x: x[0, 0], params)
    jaxpr = jax.make_jaxpr(jax.value_and_grad(objective.loss, has_aux=True))(one, data)
    per_member = sum(np.prod(v.aval.shape) * v.aval.dtype.itemsize
                     for eqn in jaxpr.jaxpr.eqns for v in eqn.outvars if hasattr(v.aval, "shape"))
    per_member += 4 * sum(x.nbytes for x in jax.tree_util.tree_leaves(one))
    return max(1, int(memory_budget // (per_member * n_members)))


def _machine_memory() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return float(stats["bytes_limit"])
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _progress_bar(total, enabled):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="net-epoch", unit_scale=True, desc="training", smoothing=0.1)
