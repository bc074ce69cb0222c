"""The model interface and helpers shared by every model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from chaosgd.precision import float64

Params = Any  # a pytree of arrays
DTYPES = ("float64", "float32")


class Model(Protocol):
    """What the engine needs from a model: a pure initialiser and a pure forward pass returning logits."""

    def init(self, key: jax.Array) -> Params: ...

    def apply(self, params: Params, x: jax.Array) -> jax.Array: ...


@dataclass(frozen=True)
class FunctionModel:
    """A model from two plain functions, e.g. a Flax module's ``init``/``apply`` or hand-written JAX:
    ``FunctionModel(init=lambda key: params, apply=lambda params, x: logits)``."""

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]


@float64
def from_equinox(make: Callable[[jax.Array], object]) -> FunctionModel:
    """A model from an Equinox module factory ``make(key) -> module`` whose module maps one example to logits.

    The module's floating-point arrays are the parameters (``eqx.partition``); everything else (activations, shapes)
    is taken once from ``make(PRNGKey(0))``; ``apply`` maps the module over the batch.
    """
    import equinox as eqx

    static = eqx.partition(make(jax.random.PRNGKey(0)), eqx.is_inexact_array)[1]

    def init(key):
        return eqx.partition(make(key), eqx.is_inexact_array)[0]

    def apply(params, x):
        return jax.vmap(eqx.combine(params, static))(x)

    return FunctionModel(float64(init), float64(apply))


@float64
def from_flax(module, example_input=None) -> FunctionModel:
    """A model from Flax: a linen ``Module`` (with an ``example_input`` batch for its ``init``), or an NNX factory
    ``make(rngs: nnx.Rngs) -> nnx.Module`` (each initial condition is the module ``make`` builds from its key).

    The parameters (linen's ``"params"`` collection, NNX's ``nnx.Param`` variables) are what is trained; a module
    with other state (batch statistics, dropout RNG streams) is refused, as are parameters that are not float64
    (give the layers ``param_dtype=jnp.float64``): epsilon-balls of 1e-8 need float64.
    """
    from flax import linen, nnx

    if isinstance(module, linen.Module):
        if example_input is None:
            raise ValueError("a linen module needs example_input (a batch) for its init")
        x0 = jnp.asarray(example_input)
        variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x0)
        _refuse_state(type(module).__name__, sorted(set(variables) - {"params"}))
        model = FunctionModel(float64(lambda key: module.init(key, x0)["params"]),
                              float64(lambda params, x: module.apply({"params": params}, x)))
    elif callable(module):
        graphdef, _, rest = nnx.split(nnx.eval_shape(lambda: module(nnx.Rngs(0))), nnx.Param, ...)
        _refuse_state(getattr(module, "__name__", "the NNX module"), sorted({type(v).__name__ for v in
                                                                            jax.tree_util.tree_leaves(rest)}))

        def init(key):
            return nnx.split(module(nnx.Rngs(key)), nnx.Param, ...)[1]

        model = FunctionModel(float64(init), float64(lambda params, x: nnx.merge(graphdef, params, rest)(x)))
    else:
        raise TypeError(f"from_flax needs a linen Module or an NNX factory make(rngs); got {type(module).__name__}")
    dtypes = {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(jax.eval_shape(model.init,
                                                                                    jax.random.PRNGKey(0)))}
    if dtypes != {"float64"}:
        raise ValueError(f"the Flax model's parameters are {', '.join(sorted(dtypes))}, not float64: give its layers "
                         "param_dtype=jnp.float64")
    return model


def _refuse_state(name: str, other: list[str]) -> None:
    if other:
        raise ValueError(f"{name} holds state besides its parameters ({', '.join(other)}): chaosgd trains "
                         "parameters only (no batch statistics or dropout streams in Flax models)")


@float64
def count_parameters(model: Model) -> int:
    """Number of trainable scalars of ``model``, computed from shapes only (nothing is allocated)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes)))


@float64
def param_dtypes(model: Model) -> set[str]:
    """The dtypes of ``model``'s parameters, from shapes only."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    return {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(shapes)}


@float64
def check_model(model: Model, example_shape: tuple, n_classes: int, dtype: str = "float64") -> None:
    """Refuse a user's model whose parameters are not of ``dtype`` (``ValueError``) or that does not map a batch of
    examples of ``example_shape`` to one logit per class (from shapes only)."""
    dtypes = param_dtypes(model)
    if dtypes != {dtype}:
        raise ValueError(f"its parameters are {', '.join(sorted(dtypes))}, not {dtype} (model.dtype)"
                         + ("; epsilon-balls of 1e-8 need float64: build them in float64"
                            if dtype == "float64" else ""))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    try:
        out = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((2, *example_shape), "float64"))
    except (TypeError, ValueError) as error:  # (shape errors of jax.numpy and of chaosgd.gemm)
        raise ValueError(f"the model cannot take a batch of the data's examples, shape (2, "
                         f"{', '.join(map(str, example_shape))}): {error}") from None
    if out.shape != (2, n_classes):
        raise ValueError(f"the model maps a batch of 2 examples to shape {out.shape}; the data has "
                         f"{n_classes} classes, so it must be (2, {n_classes}): one logit per class")


def weight_mask(params: Params) -> Params:
    """True for weight leaves (matrices and kernels, ndim >= 2), False for biases (ndim 1).

    The paper's public code perturbs weights only and its L2 term is on the weights ``W``; this is the rule that tells
    them apart for any model whose biases are vectors, which covers dense and convolutional layers alike.
    """
    return jax.tree_util.tree_map(lambda leaf: jnp.ndim(leaf) >= 2, params)


@float64
def normal_weights_zero_biases(key: jax.Array, shapes: list[tuple[tuple[int, ...], tuple[int, ...]]],
                               sigma: float, dtype) -> tuple[dict, ...]:
    """Layers ``({"w": N(0, sigma^2), "b": 0}, ...)``: the paper's initialisation."""
    keys = jax.random.split(key, len(shapes))
    return tuple(
        {"w": sigma * jax.random.normal(k, w_shape, dtype=dtype), "b": jnp.zeros(b_shape, dtype=dtype)}
        for k, (w_shape, b_shape) in zip(keys, shapes)
    )
