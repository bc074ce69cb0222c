"""The dynamical system: one full-batch gradient-descent step, ``theta(t+1) = theta(t) - eta * grad L(theta(t))``.

Everything else in chaosgd (Lyapunov exponents, sharpness, sweeps) iterates this map and nothing else.
"""

from __future__ import annotations

import jax

from chaosgd.objective import Objective


def gd_step(objective: Objective):
    """Return ``step(params, eta, data) -> (new_params, loss, train_accuracy)`` for ONE network.

    The loss and accuracy returned are those of the parameters before the step (the paper records loss before each
    step); they come from the same forward pass as the gradient, so recording them costs nothing.
    """
    value_and_grad = jax.value_and_grad(objective.loss, has_aux=True)

    def step(params, eta, data):
        (loss, acc), grads = value_and_grad(params, data)
        new = jax.tree_util.tree_map(lambda p, g: p - eta.astype(p.dtype) * g, params, grads)
        return new, loss, acc

    return step


def ensemble_step(objective: Objective):
    """``gd_step`` vectorised over a leading member axis of ``params`` and ``eta`` (shared ``data``)."""
    return jax.vmap(gd_step(objective), in_axes=(0, 0, None))

