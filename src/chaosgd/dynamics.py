"""The dynamical system: one epoch of training of one network, ``(theta, s)(t) -> (theta, s)(t + 1)``.

The state is the parameters theta and the optimiser's state s (empty for the paper's full-batch gradient descent,
``theta(t+1) = theta(t) - eta grad L(theta(t))``). An epoch is ``ceil(N / B)`` steps over the training set in an
order drawn from (seed, initial condition, epoch), and dropout masks from (seed, initial condition, epoch, step):
a reference and its perturbed copies share them, so the map is deterministic and the distance between them
measures the sensitivity of training, not its noise (``shared_noise=False`` gives each copy its own).

Everything else in chaosgd (Lyapunov exponents, sharpness, sweeps) iterates this map and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from chaosgd.objective import Objective, over_chunks
from chaosgd.optimizers import GD, Optimizer

# Streams of random numbers under an initial condition's key fold_in(PRNGKey(seed), i): 0 draws its weights
# (chaosgd.ensemble), these the noise of its training.
_ORDER_STREAM, _DROPOUT_STREAM = 1, 2


@dataclass(frozen=True)
class UpdateRule:
    """How a network is trained, besides its learning rate: the optimiser and the minibatches.

    Attributes:
        optimizer: the update rule and its schedule (``optimizers.Optimizer``; default the paper's gradient descent).
        batch_size: examples per step; 0 (default) or at least the training-set size: full batch, one step per
            epoch, in the data's own order.
        shared_noise: a reference and its copies see the same minibatch order and dropout masks (default); False
            gives copy j its own, to tell noise-driven from chaos-driven divergence.
        seed: of the minibatch orders and dropout masks (experiments use the ensemble's seed).
    """

    optimizer: Optimizer = GD
    batch_size: int = 0
    shared_noise: bool = True
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.optimizer, Optimizer):
            raise ValueError(f"optimizer must be a chaosgd.optimizers.Optimizer; got {self.optimizer!r}")
        if int(self.batch_size) != self.batch_size or self.batch_size < 0:
            raise ValueError(f"batch_size must be an integer >= 0 (0: full batch); got {self.batch_size}")

    def full_batch(self, n_train: int) -> bool:
        return self.batch_size == 0 or self.batch_size >= n_train

    def steps_per_epoch(self, n_train: int) -> int:
        return 1 if self.full_batch(n_train) else math.ceil(n_train / self.batch_size)


FULL_BATCH_GD = UpdateRule()


def noisy(objective: Objective, rule: UpdateRule, n_train: int) -> bool:
    """Whether an epoch draws minibatches or dropout masks (else it is one full-batch step)."""
    return not rule.full_batch(n_train) or objective.dropout


def member_epoch(objective: Objective, rule: UpdateRule, n_train: int, epochs: int, parts: int = 1,
                 chunk: int | None = None):
    """``epoch(params, state, eta, data, ic, copy, t) -> (params, state, loss, train_accuracy)`` for ONE network.

    ``ic``, ``copy`` and ``t`` (integer scalars) pick the minibatch order and dropout masks; ``epochs`` is the
    length of the run (for schedules that end with it). The loss and accuracy are those of theta(t) on the whole
    training set, before the epoch: with full batches and no dropout they come from the same forward pass as the
    gradient, free; otherwise from one more (deterministic) forward pass.

    ``parts`` > 1 (minibatches only; it must divide the steps of an epoch): the map of one part of an epoch,
    ``steps_per_epoch / parts`` steps, and ``t`` counts parts (part ``t % parts`` of epoch ``t // parts``), so that
    the records resolve what happens within an epoch. Iterating it ``parts`` times is the epoch map.

    ``chunk``: full-batch gradients and whole-training-set losses are computed over chunks of this many examples
    (``objective.over_chunks``: the same to roundoff, in the memory of one chunk); None: all at once.
    """
    opt = rule.optimizer
    rate = _rate(opt, rule.steps_per_epoch(n_train), epochs)
    check_parts(rule, n_train, parts)
    if noisy(objective, rule, n_train):
        group = group_epoch(objective, rule, n_train, epochs, parts, chunk)

        def epoch(params, state, eta, data, ic, copy, t):  # a group of one
            one, first = (lambda x: jnp.asarray(x)[None]), (lambda x: x[0])
            params, state, loss, acc = group(jax.tree_util.tree_map(one, params), jax.tree_util.tree_map(one, state),
                                             one(eta), data, ic, one(copy), t)
            return jax.tree_util.tree_map(first, params), jax.tree_util.tree_map(first, state), loss[0], acc[0]
        return epoch

    value_and_grad = jax.value_and_grad(objective.loss, has_aux=True)

    def epoch(params, state, eta, data, ic, copy, t):
        (loss, acc), grads = over_chunks(lambda part: value_and_grad(params, part), data, chunk)
        params, state = opt.update(grads, state, params, rate(eta, t))
        return params, state, loss, acc
    return epoch


def group_epoch(objective: Objective, rule: UpdateRule, n_train: int, epochs: int, parts: int = 1,
                chunk: int | None = None):
    """``member_epoch`` for a group of networks that share their noise (a reference and its copies under
    ``shared_noise``, else one network): ``params``, ``state``, ``eta`` and ``copy`` have a leading member axis,
    ``ic`` and ``t`` are scalars. Each minibatch is gathered once for the group, and its members' products with it
    are one wide product, as with full batches."""
    check_parts(rule, n_train, parts)
    if not noisy(objective, rule, n_train):
        return jax.vmap(member_epoch(objective, rule, n_train, epochs, chunk=chunk),
                        in_axes=(0, 0, 0, None, None, 0, None))
    opt = rule.optimizer
    steps = rule.steps_per_epoch(n_train)
    part_steps = steps // parts
    rate = _rate(opt, steps, epochs)
    # (Each minibatch's gradient is computed whole: only the loss over the training set is chunked.)
    losses = jax.vmap(lambda p, data: over_chunks(lambda part: objective.loss(p, part), data, chunk),
                      in_axes=(0, None))
    update = jax.vmap(opt.update, in_axes=(0, 0, 0, 0))

    def epoch(params, state, eta, data, ic, copy, t):
        loss, acc = losses(params, data)  # of theta(t), on every example, dropout off
        # Part t of the run is part `first // part_steps` of its epoch: the epoch's order and masks, from its step on.
        epoch_t, first = (t, 0) if parts == 1 else (t // parts, (t % parts) * part_steps)
        index, weight = batch_order(rule, n_train, ic, copy[0], epoch_t)
        dropout_key = _noise_key(rule, _DROPOUT_STREAM, ic, copy[0], epoch_t)

        def step(carry, s):
            params, state = carry
            batch = data
            if index is not None:
                batch = dict(data, x_train=data["x_train"][index[s]], y_train=data["y_train"][index[s]],
                             weight=weight[s].astype(data["x_train"].dtype))
            if objective.dropout:
                mask_key = jax.random.fold_in(dropout_key, s)
                grad = jax.grad(lambda p: objective.loss(p, batch, mask_key)[0])
            else:
                grad = jax.grad(lambda p: objective.loss(p, batch)[0])
            return update(jax.vmap(grad)(params), state, params, rate(eta, epoch_t * steps + s)), None

        (params, state), _ = jax.lax.scan(step, (params, state), first + jnp.arange(part_steps))
        return params, state, loss, acc

    return epoch


def check_parts(rule: UpdateRule, n_train: int, parts: int) -> None:
    """Refuse ``parts`` (records per epoch) that is not a divisor of the steps of an epoch."""
    steps = rule.steps_per_epoch(n_train)
    if isinstance(parts, bool) or int(parts) != parts or parts < 1 or steps % parts:
        allowed = [k for k in range(1, steps + 1) if steps % k == 0]
        raise ValueError(f"records per epoch must divide the {steps} step(s) of an epoch (batch size "
                         f"{rule.batch_size or 'full'}, {n_train} training examples), so that every record falls "
                         f"between two steps: one of {_some(allowed)}; got {parts}")


def _some(values: list) -> str:
    return ", ".join(map(str, values)) if len(values) <= 12 else ", ".join(map(str, values[:6] + ["…"] + values[-3:]))


def _rate(opt: Optimizer, steps: int, epochs: int):
    """``rate(eta, step)``: the learning rate of a step; the constant schedule leaves eta untouched (bit-identical
    to earlier versions)."""
    shape = None if opt.schedule == "constant" else opt.shape(steps, epochs)
    return lambda eta, step: eta if shape is None else eta * shape(step).astype(eta.dtype)


def _noise_key(rule: UpdateRule, stream: int, ic, copy, t) -> jax.Array:
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(rule.seed), ic), stream)
    return jax.random.fold_in(jax.random.fold_in(key, 0 if rule.shared_noise else copy), t)


def batch_order(rule: UpdateRule, n_train: int, ic, copy, t):
    """The minibatches of epoch ``t`` for copy ``copy`` of initial condition ``ic``: ``(index, weight)``, each of
    shape ``(steps, B)``; step s trains on examples ``index[s]`` weighted by ``weight[s]``. Every example is seen
    once per epoch, in an order drawn from (``rule.seed``, ic, t) (and the copy, without shared noise); the last
    batch is padded to B with examples of weight 0. ``(None, None)`` for full batches (the data's own order)."""
    if rule.full_batch(n_train):
        return None, None
    steps = rule.steps_per_epoch(n_train)
    order = jax.random.permutation(_noise_key(rule, _ORDER_STREAM, ic, copy, t), n_train)
    pad = steps * rule.batch_size - n_train
    index = jnp.concatenate([order, order[:pad]]).reshape(steps, rule.batch_size)
    weight = jnp.concatenate([jnp.ones(n_train), jnp.zeros(pad)]).reshape(steps, rule.batch_size)
    return index, weight
