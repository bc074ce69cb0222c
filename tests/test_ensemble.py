import jax
import numpy as np
import pytest

from chaosgd import CNN, MLP, epsilon_ball, initial_conditions


def test_copy_zero_is_the_centre_and_noise_is_bounded():
    model = MLP((4, 10, 3))
    centres = initial_conditions(model, 3, seed=1)
    ball = epsilon_ball(centres, 5, epsilon=1e-3, seed=1)
    for c, b in zip(jax.tree_util.tree_leaves(centres), jax.tree_util.tree_leaves(ball)):
        assert b.shape == (3, 6) + c.shape[1:]
        np.testing.assert_array_equal(b[:, 0], c)
        offset = np.asarray(b[:, 1:] - c[:, None])
        assert np.all(np.abs(offset) <= 1e-3) and np.abs(offset).max() > 5e-4


def test_weights_mode_leaves_biases_alone():
    model = MLP((4, 10, 3))
    centres = initial_conditions(model, 2)
    ball = epsilon_ball(centres, 3, epsilon=1e-6, perturb="weights")
    for layer_c, layer_b in zip(centres, ball):
        np.testing.assert_array_equal(layer_b["b"], np.repeat(layer_c["b"][:, None], 4, axis=1))
        assert not np.array_equal(layer_b["w"][:, 1], layer_b["w"][:, 0])


def test_any_initial_condition_can_be_recreated_alone():
    model = MLP((4, 10, 3))
    full = epsilon_ball(initial_conditions(model, 5, seed=3), 2, seed=3)
    alone = epsilon_ball(initial_conditions(model, 1, seed=3, first=3), 2, seed=3, first=3)
    for f, a in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(alone)):
        np.testing.assert_array_equal(f[3:4], a)


def test_initial_condition_i_is_the_model_initialised_with_its_documented_key():
    """Initial condition i of seed s is ``model.init(fold_in(fold_in(PRNGKey(s), i), 0))`` (module docstring),
    whatever the count it was made with; indices that do not fit the key's 32 bits are refused, not wrapped."""
    model = MLP((4, 10, 3))
    made = initial_conditions(model, 3, seed=5, first=7)
    for i in range(3):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(5), 7 + i), 0)
        for m, d in zip(jax.tree_util.tree_leaves(made), jax.tree_util.tree_leaves(model.init(key))):
            np.testing.assert_array_equal(m[i], d)
    last = initial_conditions(model, 2, first=2**32 - 2)  # the last two that fit
    assert jax.tree_util.tree_leaves(last)[0].shape[0] == 2
    for first, n in [(-1, 1), (2**32 - 2, 3)]:
        with pytest.raises(ValueError, match="must lie in"):
            initial_conditions(model, n, first=first)


def test_initialisation_is_normal_weights_and_zero_biases():
    params = initial_conditions(MLP((784, 64, 10), sigma=1.0), 2)
    w = np.asarray(params[0]["w"])
    assert abs(w.std() - 1.0) < 0.01 and abs(w.mean()) < 0.01
    assert np.all(np.asarray(params[0]["b"]) == 0)
    cnn = initial_conditions(CNN(), 1)
    assert abs(np.asarray(cnn[1]["w"]).std() - 0.01) < 0.001


def test_epsilon_below_float32_resolution_is_refused():
    centres = initial_conditions(MLP((4, 10, 3), dtype="float32"), 2)
    with pytest.raises(ValueError, match="resolution of float32.*float64"):
        epsilon_ball(centres, 3, epsilon=1e-8)
    epsilon_ball(centres, 3, epsilon=1e-4)  # well above resolution: accepted
    epsilon_ball(initial_conditions(MLP((4, 10, 3)), 2), 3, epsilon=1e-8)  # float64: accepted


@pytest.mark.parametrize("model, epsilon", [(MLP((4, 10, 3)), 10.0), (MLP((4, 10, 3)), 0.1), (CNN(), 1e-3)])
def test_an_epsilon_not_small_against_the_weights_is_refused(model, epsilon):
    """A ball comparable to the weights leaves no room for an exponential phase (epsilon = 10 read p = 0 on Iris);
    the CNN's weights are N(0, 0.01^2), so its limit is a hundred times lower."""
    from chaosgd.experiments.config import Config, ConfigError

    centres = initial_conditions(model, 1)
    with pytest.raises(ValueError, match="not small against weights"):
        epsilon_ball(centres, 1, epsilon=epsilon)
    epsilon_ball(centres, 1, epsilon=1e-3 if isinstance(model, MLP) else 1e-5)  # a tenth of the limit: accepted
    if isinstance(model, MLP):
        with pytest.raises(ConfigError, match="ensemble.epsilon: .* is not small against weights of size 1"):
            Config.from_dict({"name": "x", "ensemble": {"epsilon": epsilon}})


@pytest.mark.parametrize("kwargs, message", [({"epsilon": -1.0}, ">= 0"), ({"perturb": "biases"}, "perturb"),
                                             ({"epsilon": float("nan")}, "finite")])
def test_bad_ball_arguments_are_refused(kwargs, message):
    centres = initial_conditions(MLP((4, 10, 3)), 1)
    with pytest.raises(ValueError, match=message):
        epsilon_ball(centres, 2, **kwargs)
