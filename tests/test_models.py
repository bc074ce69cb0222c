import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosgd.models import CNN, MLP, count_parameters, for_dataset


@pytest.mark.parametrize("widths, expected", [((784, 64, 10), 50_890), ((784, 32, 32, 10), 26_506),
                                              ((4, 10, 3), 83), ((3072, 256, 10), 789_258)])
def test_paper_mlps_have_the_paper_parameter_counts(widths, expected):
    assert count_parameters(MLP(widths)) == expected


def test_paper_cnn_has_9098_parameters_and_the_right_shapes():
    cnn = CNN()
    assert count_parameters(cnn) == 9_098
    params = cnn.init(jax.random.PRNGKey(0))
    assert [layer["w"].shape for layer in params] == [(3, 3, 1, 8), (3, 3, 8, 16), (784, 10)]
    assert cnn.apply(params, jnp.ones((5, 28, 28, 1))).shape == (5, 10)


def test_cnn_matches_a_direct_computation():
    cnn = CNN(input_shape=(4, 4, 1), channels=(2,), n_classes=3, sigma=1.0)
    params = cnn.init(jax.random.PRNGKey(1))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (2, 4, 4, 1)))
    k, b = np.asarray(params[0]["w"]), np.asarray(params[0]["b"])
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((2, 4, 4, 2))
    for i in range(4):
        for j in range(4):
            conv[:, i, j] = np.einsum("nhwc,hwco->no", padded[:, i:i + 3, j:j + 3], k)
    h = np.maximum(conv + b, 0).reshape(2, 2, 2, 2, 2, 2).max(axis=(2, 4))
    expected = h.reshape(2, -1) @ np.asarray(params[1]["w"]) + np.asarray(params[1]["b"])
    np.testing.assert_allclose(cnn.apply(params, x), expected, rtol=1e-12)


@pytest.mark.parametrize("activation, fn", [("tanh", np.tanh), ("sigmoid", lambda z: 1 / (1 + np.exp(-z))),
                                            ("relu", lambda z: np.maximum(z, 0))])
def test_mlp_forward_matches_numpy(activation, fn):
    mlp = MLP((3, 4, 2), activation=activation)
    params = mlp.init(jax.random.PRNGKey(0))
    x = np.random.default_rng(0).standard_normal((5, 3))
    w1, b1, w2, b2 = (np.asarray(a) for a in (params[0]["w"], params[0]["b"], params[1]["w"], params[1]["b"]))
    np.testing.assert_allclose(mlp.apply(params, x), fn(x @ w1 + b1) @ w2 + b2, rtol=1e-12)


def test_parameters_are_float64_by_default():
    for model in (MLP((4, 10, 3)), CNN()):
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree_util.tree_leaves(model.init(jax.random.PRNGKey(0))))


@pytest.mark.parametrize("kwargs, message", [(dict(widths=(4,)), "at least two"),
                                             (dict(widths=(4, 3), activation="gelu"), "tanh"),
                                             (dict(widths=(4, 3), sigma=0.0), "sigma")])
def test_bad_mlp_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLP(**kwargs)


def test_for_dataset_builds_the_paper_models():
    assert count_parameters(for_dataset("mlp", (28, 28, 1), 10)) == 50_890
    assert count_parameters(for_dataset("cnn", (28, 28, 1), 10)) == 9_098
    with pytest.raises(ValueError, match="image inputs"):
        for_dataset("cnn", (4,), 3)


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="float64"):
        MLP((4, 3), dtype="float8")
    with pytest.raises(ValueError, match="float64"):
        CNN(dtype="int32")
