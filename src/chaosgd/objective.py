"""What gradient descent minimises: the full-batch training loss, and what is recorded beside it.

An ``Objective`` holds two pure functions of one network's parameters and a data pytree, so the engine can vmap them
over an ensemble and pass the (large) data as an argument instead of baking it into the compiled program.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import jax
import jax.numpy as jnp

from chaosgd.models.base import Model, weight_mask
from chaosgd.precision import float64


@dataclass(frozen=True)
class Objective:
    """``loss(params, data) -> (loss, train_accuracy)`` and ``test_accuracy(params, data) -> accuracy``.

    With ``dropout``, ``loss(params, data, key)`` takes a PRNG key for the training masks too (``loss(params, data)``
    is then the deterministic loss, dropout off). Minibatches (``dynamics.UpdateRule(batch_size=...)``) pass ``data``
    with ``x_train``, ``y_train`` replaced by the batch's and ``weight``, one per example (0 for padding).

    ``chunkable``: the loss, its accuracy and the test accuracy are means over the examples of ``x_train, y_train``
    (``x_test, y_test``) plus terms free of them, so the engine may compute them over chunks of examples when a group
    does not fit in memory (``over_chunks``); ``classification`` sets it. False (default): always all at once.
    """

    loss: Callable[..., tuple[jax.Array, jax.Array]]
    test_accuracy: Callable[[Any, Any], jax.Array]
    dropout: bool = False
    chunkable: bool = False


def over_chunks(fn: Callable[[Any], Any], data: dict, chunk: int | None, fields=("x_train", "y_train")):
    """``fn(data)`` computed over chunks of ``chunk`` examples of ``data[fields]`` (a scan, so that only one chunk's
    intermediates exist at a time) and combined as the mean weighted by each chunk's size.

    For any ``fn`` whose outputs are means over the examples plus terms that do not depend on them (the loss, its
    gradient, the accuracy; an L2 term), this equals ``fn(data)`` to roundoff, whatever the chunk size. ``chunk``
    None or at least the number of examples, or data without ``fields``: ``fn(data)`` itself, unchanged.
    """
    if not chunk or not (isinstance(data, dict) and fields[0] in data) or chunk >= data[fields[0]].shape[0]:
        return fn(data)
    n = data[fields[0]].shape[0]
    full, rest = divmod(n, int(chunk))

    def part(start, size):
        return dict(data, **{f: jax.lax.dynamic_slice_in_dim(data[f], start, size) for f in fields})

    def add(total, start, size):
        return jax.tree_util.tree_map(lambda t, out: t + out * (size / n), total, fn(part(start, size)))

    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, part(0, chunk)))
    total, _ = jax.lax.scan(lambda total, i: (add(total, i * chunk, chunk), None), zeros, jnp.arange(full))
    return add(total, full * chunk, rest) if rest else total


def cross_entropy(logits: jax.Array, labels: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    """Mean over examples of ``-log softmax(logits)[label]`` (the paper's eq. 2); weighted by ``weight``."""
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=-1)
    return -jnp.mean(picked) if weight is None else -jnp.sum(weight * picked[:, 0]) / jnp.sum(weight)


def accuracy(logits: jax.Array, labels: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
    return jnp.mean(hits) if weight is None else jnp.sum(weight * hits) / jnp.sum(weight)


@float64
@lru_cache(maxsize=64)  # the same (model, l2) gives the same Objective, so compiled programs are reused
def classification(model: Model, *, l2: float = 0.0) -> Objective:
    """Cross-entropy of ``model`` on ``data["x_train"], data["y_train"]`` plus ``(l2 / 2) * ||W||^2``.

    The L2 term covers the weights only (see ``models.weight_mask``), as in the paper's ``L + (lambda/2)||W||^2``.
    Accuracies are fractions in [0, 1]; the test accuracy uses ``data["x_test"], data["y_test"]``. A model with
    ``dropout`` > 0 gets its training masks from the key the loss is given (``Objective.dropout``).
    """
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0; got {l2}")
    dropout = getattr(model, "dropout", 0) > 0

    def loss(params, data, key=None):
        logits = model.apply(params, data["x_train"]) if key is None else model.apply(params, data["x_train"], key=key)
        weight = data.get("weight")
        value = cross_entropy(logits, data["y_train"], weight)
        if l2:
            squares = jax.tree_util.tree_map(lambda p, is_w: jnp.sum(p * p) if is_w else 0.0,
                                             params, weight_mask(params))
            value = value + 0.5 * l2 * sum(jax.tree_util.tree_leaves(squares))
        return value, accuracy(logits, data["y_train"], weight)

    def test_accuracy(params, data):
        return accuracy(model.apply(params, data["x_test"]), data["y_test"])

    # (float64 also when a caller evaluates them directly, outside chaosgd's own calls)
    return Objective(loss=float64(loss), test_accuracy=float64(test_accuracy), dropout=dropout, chunkable=True)
