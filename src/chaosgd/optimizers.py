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



@dataclass(frozen=True)
class Spec:
    """What chaosgd knows of one optimiser by name, in one place: the hyperparameters it reads (the others must
    stay at their defaults: a value set and then ignored would be silently wrong), its optax constructor (None:
    written out, as gd is), its stability limit on a quadratic at learning rate eta and how reports state it (None:
    no limit is defined here, and ``no_limit`` says why), whether that limit is on the preconditioned sharpness,
    and whether it keeps no state besides the parameters (and schedules' step counters)."""

    reads: tuple[str, ...]
    build: Callable | None
    limit: Callable | None
    limit_text: str
    preconditioned: bool = False
    stateless: bool = False
    no_limit: str = ""


# Stability limits: Cohen et al. 2022, "Adaptive gradient methods at the edge of stability".
SPECS = {
    "gd": Spec((), None, lambda o, eta: 2 / eta, "2/eta, the stability limit of gradient descent on a quadratic",
               stateless=True),
    "sgd": Spec((), lambda o, lr: optax.sgd(lr), lambda o, eta: 2 / eta,
                "2/eta, the stability limit of gradient descent on a quadratic", stateless=True),
    "momentum": Spec(("momentum",), lambda o, lr: optax.sgd(lr, momentum=o.momentum),
                     lambda o, eta: 2 * (1 + o.momentum) / eta,
                     "2(1 + beta)/eta, the stability limit of heavy-ball momentum on a quadratic"),
    "nesterov": Spec(("momentum",), lambda o, lr: optax.sgd(lr, momentum=o.momentum, nesterov=True),
                     lambda o, eta: 2 * (1 + o.momentum) / (eta * (1 + 2 * o.momentum)),
                     "2(1 + beta)/(eta (1 + 2 beta)), Nesterov's stability limit on a quadratic"),
    "adam": Spec(("b1", "b2", "eps"), lambda o, lr: optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps),
                 lambda o, eta: (2 + 2 * o.b1) / ((1 - o.b1) * eta),
                 "(2 + 2 b1)/((1 - b1) eta), Adam's limit on the preconditioned sharpness (Cohen et al. 2022)",
                 preconditioned=True),
    "adamw": Spec(("b1", "b2", "eps", "weight_decay"),
                  lambda o, lr: optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay),
                  None, "", preconditioned=True,
                  no_limit="its decoupled weight decay is outside the preconditioned Hessian P^-1 H"),
    "rmsprop": Spec(("decay", "eps"), lambda o, lr: optax.rmsprop(lr, decay=o.decay, eps=o.eps), lambda o, eta: 2 / eta,
                    "2/eta, RMSprop's limit on the preconditioned sharpness", preconditioned=True),
}
NAMES = tuple(SPECS)
STATELESS = tuple(name for name, spec in SPECS.items() if spec.stateless)
READS = {name: spec.reads for name, spec in SPECS.items()}  # (the hyperparameters each optimiser reads)
SCHEDULES = ("constant", "warmup_cosine", "step")
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
        if SPECS[self.name].build is None:
            raise ValueError(f"{self.name!r} has no optax transformation (gd is written out)")
        return SPECS[self.name].build(self, learning_rate)

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
        *preconditioned* sharpness, (2 + 2 b1)/((1 - b1) eta) (38/eta at b1 = 0.9) and 2/eta (``SPECS``). NaN for
        adamw and a custom optimiser."""
        spec = SPECS.get(self.name)
        return math.nan if spec is None or spec.limit is None else spec.limit(self, eta)

    @property
    def preconditioned(self) -> bool:
        """Whether the stability limit is on the preconditioned Hessian (adaptive optimisers)."""
        return self.name in SPECS and SPECS[self.name].preconditioned

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
