"""Update rules: how gradients become steps (an optax ``GradientTransformation``), the learning-rate schedule, and
the stability limit each rule is compared with.

``gd`` is the paper's ``theta - eta * grad``, written out (no optax state), so the default stays bit-identical to
earlier versions; every other name is an optax optimiser built at the learning rate of the current step, so one
compiled program serves a whole ensemble of learning rates. The learning rate of a sweep is the *peak* rate: a
schedule multiplies it by a shape in [0, 1] of the step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import jax
import jax.numpy as jnp
import optax

NAMES = ("gd", "sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
STATELESS = ("gd", "sgd")  # no state besides the parameters (and schedules' step counters)
SCHEDULES = ("constant", "warmup_cosine", "step")
# The hyperparameters each optimiser reads (the others must stay at their defaults: a value set and then ignored
# would be silently wrong).
READS = {"gd": (), "sgd": (), "momentum": ("momentum",), "nesterov": ("momentum",), "adam": ("b1", "b2", "eps"),
         "adamw": ("b1", "b2", "eps", "weight_decay"), "rmsprop": ("decay", "eps")}
SCHEDULE_READS = {"constant": (), "warmup_cosine": ("warmup_epochs",), "step": ("decay_every", "decay_factor")}


@dataclass(frozen=True)
class Optimizer:
    """An update rule by name with its hyperparameters (optax's defaults), and its learning-rate schedule.

    Attributes:
        name: one of ``NAMES``; ``momentum`` is heavy ball (``optax.sgd(momentum=...)``: ``m = g + momentum * m``,
            step ``-eta * m``), ``nesterov`` its Nesterov form.
        momentum, b1, b2, eps, weight_decay, decay: as in optax (``READS`` says which optimiser reads which).
        schedule: ``constant``; ``warmup_cosine``: linear from 0 to eta over ``warmup_epochs``, then a cosine to 0
            at the last epoch; ``step``: eta times ``decay_factor`` every ``decay_every`` epochs.
        make: from Python, any optax optimiser instead of a name: ``make(learning_rate) -> GradientTransformation``
            (``name`` is then ``"custom"``).
    """

    name: str = "gd"
    momentum: float = 0.9
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-4
    decay: float = 0.9
    schedule: str = "constant"
    warmup_epochs: int = 0
    decay_every: int = 0
    decay_factor: float = 0.1
    make: Callable[[jax.Array], optax.GradientTransformation] | None = None

    def __post_init__(self):
        if self.make is not None:
            object.__setattr__(self, "name", "custom")
        elif self.name not in NAMES:
            raise ValueError(f"unknown optimizer {self.name!r}; choose one of {list(NAMES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {list(SCHEDULES)}")
        if self.schedule == "step" and self.decay_every < 1:
            raise ValueError(f"the step schedule needs decay_every >= 1 (epochs); got {self.decay_every}")

    @classmethod
    def custom(cls, make: Callable[[jax.Array], optax.GradientTransformation], **schedule) -> "Optimizer":
        """Any optax optimiser: ``Optimizer.custom(lambda lr: optax.lion(lr))``."""
        return cls(make=make, **schedule)

    def transformation(self, learning_rate) -> optax.GradientTransformation:
        """The optax optimiser at ``learning_rate`` (a traced scalar: the rate of this step). Not for ``gd``."""
        if self.make is not None:
            return self.make(learning_rate)
        if self.name == "sgd":
            return optax.sgd(learning_rate)
        if self.name in ("momentum", "nesterov"):
            return optax.sgd(learning_rate, momentum=self.momentum, nesterov=self.name == "nesterov")
        if self.name == "adam":
            return optax.adam(learning_rate, b1=self.b1, b2=self.b2, eps=self.eps)
        if self.name == "adamw":
            return optax.adamw(learning_rate, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=self.weight_decay)
        if self.name == "rmsprop":
            return optax.rmsprop(learning_rate, decay=self.decay, eps=self.eps)
        raise ValueError(f"{self.name!r} has no optax transformation (gd is written out)")

    def init(self, params):
        """The optimiser state at the start of training (empty for gd): the same for a reference and its copies."""
        if self.name == "gd":
            return ()
        return self.transformation(jnp.zeros((), dtype=jax.tree_util.tree_leaves(params)[0].dtype)).init(params)

    def update(self, grads, state, params, learning_rate):
        """One step: ``(new_params, new_state)``."""
        if self.name == "gd":
            return jax.tree_util.tree_map(lambda p, g: p - learning_rate.astype(p.dtype) * g, params, grads), state
        updates, state = self.transformation(learning_rate).update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def shape(self, steps_per_epoch: int, epochs: int) -> Callable[[jax.Array], jax.Array]:
        """The schedule as a function of the step count, with peak 1 (the learning rate is eta times it)."""
        if self.schedule == "warmup_cosine":
            total = max(1, steps_per_epoch * epochs)
            warmup = min(steps_per_epoch * self.warmup_epochs, total - 1)
            return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=warmup, decay_steps=total)
        if self.schedule == "step":
            return optax.exponential_decay(1.0, transition_steps=steps_per_epoch * self.decay_every,
                                           decay_rate=self.decay_factor, staircase=True)
        return lambda count: 1.0

    def stability_limit(self, eta: float) -> float:
        """The curvature above which the rule is unstable on a quadratic at learning rate ``eta``: 2/eta for GD and
        SGD, 2(1 + beta)/eta for heavy ball, 2(1 + beta)/(eta (1 + 2 beta)) for Nesterov (Cohen et al. 2022,
        "Adaptive gradient methods at the edge of stability"); for Adam and RMSprop the limit on the
        *preconditioned* sharpness, (2 + 2 b1)/((1 - b1) eta) (38/eta at b1 = 0.9) and 2/eta. NaN for a custom
        optimiser."""
        beta = self.momentum
        return {"gd": 2 / eta, "sgd": 2 / eta, "momentum": 2 * (1 + beta) / eta,
                "nesterov": 2 * (1 + beta) / (eta * (1 + 2 * beta)),
                "adam": (2 + 2 * self.b1) / ((1 - self.b1) * eta), "adamw": (2 + 2 * self.b1) / ((1 - self.b1) * eta),
                "rmsprop": 2 / eta}.get(self.name, math.nan)

    @property
    def preconditioned(self) -> bool:
        """Whether the stability limit is on the preconditioned Hessian (adaptive optimisers)."""
        return self.name in ("adam", "adamw", "rmsprop")

    def preconditioner(self, state):
        """The diagonal P of an adaptive optimiser's step ``theta - eta P^-1 m`` in ``state`` (a pytree like the
        parameters), as Cohen et al. (2022) define it, for the last step taken: after c steps Adam's is
        ``(1 - b1^c) (sqrt(nu / (1 - b2^c)) + eps)`` (its step is ``-eta m / P``), RMSprop's ``sqrt(nu + eps)`` (its
        step is ``-eta g / P``; optax's eps inside the root). NaN before the first step. Not for adamw (its decoupled
        decay is outside P^-1 H) nor the non-adaptive optimisers."""
        if self.name not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer {self.name!r} has no preconditioner here (adam and rmsprop have)")
        nu = optax.tree_utils.tree_get(state, "nu")
        if self.name == "rmsprop":
            started = jax.tree_util.tree_reduce(lambda a, x: a | jnp.any(x > 0), nu, jnp.bool_(False))
            return jax.tree_util.tree_map(lambda v: jnp.where(started, jnp.sqrt(v + self.eps), jnp.nan), nu)
        c = optax.tree_utils.tree_get(state, "count")
        return jax.tree_util.tree_map(
            lambda v: jnp.where(c > 0, (1 - self.b1 ** c) * (jnp.sqrt(v / (1 - self.b2 ** c)) + self.eps), jnp.nan),
            nu)

    def describe(self, skip: tuple[str, ...] = ()) -> str:
        """The name and the hyperparameters it reads (but ``skip``), e.g. ``momentum (momentum = 0.9)``."""
        set_ = [f"{f.name} = {getattr(self, f.name):g}" for f in fields(self)
                if f.name in READS.get(self.name, ()) + SCHEDULE_READS[self.schedule] and f.name not in skip]
        text = self.name + (f" ({', '.join(set_)})" if set_ else "")
        return text + ("" if self.schedule == "constant" else f", {self.schedule} schedule")


GD = Optimizer()
