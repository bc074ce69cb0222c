"""Flax (linen and NNX) models as chaosgd models: the same records as chaosgd's own MLP with the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

flax = pytest.importorskip("flax")
from flax import linen, nnx  # noqa: E402

from chaosgd import MLP, classification, run  # noqa: E402
from chaosgd.models import from_flax  # noqa: E402


class LinenMLP(linen.Module):
    dtype: type = jnp.float64

    @linen.compact
    def __call__(self, x):
        x = jnp.tanh(linen.Dense(16, param_dtype=self.dtype)(x))
        return linen.Dense(3, param_dtype=self.dtype)(x)


class NnxMLP(nnx.Module):
    def __init__(self, rngs, dtype=jnp.float64):
        self.hidden = nnx.Linear(6, 16, param_dtype=dtype, rngs=rngs)
        self.out = nnx.Linear(16, 3, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def records(model, params, data):
    return run(classification(model), jax.tree_util.tree_map(lambda w: w[None, None], params), 2.0, data, epochs=30)


def assert_same_as_mlp(model, params, layers, data):
    """``layers``: the (kernel, bias) pairs of ``params`` in order, (in, out) kernels as chaosgd's MLP holds them."""
    mlp = MLP((6, 16, 3))
    ours = records(mlp, tuple({"w": w, "b": b} for w, b in layers), data)
    theirs = records(model, params, data)
    np.testing.assert_allclose(theirs.loss, ours.loss, rtol=1e-12)
    np.testing.assert_array_equal(theirs.test_accuracy, ours.test_accuracy)


def test_a_linen_model_gives_the_records_of_the_same_mlp(blobs):
    model = from_flax(LinenMLP(), blobs.x_train[:2])
    params = model.init(jax.random.PRNGKey(3))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float64")}
    layers = [(params[f"Dense_{i}"]["kernel"], params[f"Dense_{i}"]["bias"]) for i in range(2)]
    assert_same_as_mlp(model, params, layers, blobs.arrays())


def test_an_nnx_model_gives_the_records_of_the_same_mlp(blobs):
    model = from_flax(lambda rngs: NnxMLP(rngs))
    params = model.init(jax.random.PRNGKey(3))
    other = model.init(jax.random.PRNGKey(4))
    assert not np.allclose(params["hidden"]["kernel"][...], other["hidden"]["kernel"][...])  # seeded by the key
    layers = [(params[name]["kernel"][...], params[name]["bias"][...]) for name in ("hidden", "out")]
    assert_same_as_mlp(model, params, layers, blobs.arrays())


def test_float32_flax_models_and_extra_state_are_refused(blobs):
    with pytest.raises(ValueError, match="float32, not float64: give its layers param_dtype=jnp.float64"):
        from_flax(LinenMLP(dtype=jnp.float32), blobs.x_train[:2])
    with pytest.raises(ValueError, match="float32, not float64"):
        from_flax(lambda rngs: NnxMLP(rngs, dtype=jnp.float32))

    class WithBatchNorm(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.BatchNorm(use_running_average=True, param_dtype=jnp.float64)(x)
            return linen.Dense(3, param_dtype=jnp.float64)(x)

    with pytest.raises(ValueError, match="state besides its parameters \\(batch_stats\\)"):
        from_flax(WithBatchNorm(), blobs.x_train[:2])
