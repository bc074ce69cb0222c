import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from chaosgd import MLP, classification
from chaosgd.datasets import load_iris
from chaosgd.sharpness import top_eigenvalue, top_eigenvalues, track_sharpness
from problems import quadratic_problem


@pytest.fixture(scope="module")
def iris_problem():
    model = MLP((4, 10, 3))
    objective = classification(model)
    data = load_iris().arrays()
    params = model.init(jax.random.PRNGKey(0))
    flat, unravel = ravel_pytree(params)
    hessian = np.asarray(jax.hessian(lambda f: objective.loss(unravel(f), data)[0])(flat))
    return objective, data, params, np.linalg.eigvalsh(hessian)


def test_lanczos_equals_top_eigenvalue_of_explicit_hessian(iris_problem):
    objective, data, params, eigenvalues = iris_problem
    result = top_eigenvalue(objective, params, data, iterations=20)
    assert result.value == pytest.approx(eigenvalues[-1], rel=1e-10)
    assert result.residual < 1e-6 and result.products == 20


def test_power_iteration_finds_the_dominant_eigenvalue_and_flags_a_negative_one(iris_problem):
    objective, data, params, eigenvalues = iris_problem
    dominant = eigenvalues[np.argmax(np.abs(eigenvalues))]
    assert dominant < 0 < eigenvalues[-1]   # this initialisation has a large negative curvature
    result = top_eigenvalue(objective, params, data, method="power", iterations=400)
    assert result.value == pytest.approx(dominant, rel=1e-8) and result.dominant_negative


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_quadratic_sharpness_is_max_eig_of_A(method):
    objective, data, params = quadratic_problem([0.3, 1.0, 2.5, 4.0])
    result = top_eigenvalue(objective, params, data, method=method, iterations=200 if method == "power" else 4)
    assert result.value == pytest.approx(4.0, rel=1e-8) and not result.dominant_negative


def test_lanczos_finds_the_largest_algebraic_eigenvalue_below_a_dominant_negative_one():
    objective, data, params = quadratic_problem([-5.0, 1.0, 2.0])
    assert top_eigenvalue(objective, params, data, iterations=3).value == pytest.approx(2.0, rel=1e-10)
    power = top_eigenvalue(objective, params, data, method="power", iterations=300)
    assert power.value == pytest.approx(-5.0, rel=1e-8) and power.dominant_negative


def test_tracking_along_quadratic_gd_is_constant_and_stops_at_divergence():
    objective, data, params = quadratic_problem([0.5, 2.0])
    track = track_sharpness(objective, params, 0.5, data, epochs=20, every=5, iterations=2)
    np.testing.assert_array_equal(track.epoch, [0, 5, 10, 15, 20])
    np.testing.assert_allclose(track.value, 2.0, rtol=1e-10)
    assert track.edge_of_stability == 4.0
    # Past eta = 2 / max eig the map diverges: tracking records it and stops instead of crashing.
    diverging = track_sharpness(objective, params, 50.0, data, epochs=2000, every=50, iterations=2)
    assert np.isnan(diverging.value[-1]) and diverging.epoch[-1] < 2000


def test_hessian_on_a_fixed_subset(iris_problem):
    objective, data, params, _ = iris_problem
    full = track_sharpness(objective, params, 0.1, data, epochs=0, iterations=20)
    subset = track_sharpness(objective, params, 0.1, data, epochs=0, iterations=20, hessian_examples=60)
    again = track_sharpness(objective, params, 0.1, data, epochs=0, iterations=20, hessian_examples=60)
    assert subset.value[0] == again.value[0] != full.value[0]
    assert subset.value[0] == pytest.approx(full.value[0], rel=0.5)
    with pytest.raises(ValueError, match="hessian_examples"):
        track_sharpness(objective, params, 0.1, data, epochs=0, hessian_examples=10_000)


def test_unknown_method_is_refused(iris_problem):
    objective, data, params, _ = iris_problem
    with pytest.raises(ValueError, match="lanczos"):
        top_eigenvalue(objective, params, data, method="arnoldi")


@pytest.mark.parametrize("method, iterations", [("lanczos", 20), ("power", 300)])
def test_ensemble_estimates_equal_one_network_at_a_time(method, iterations):
    model = MLP((4, 10, 3))
    objective = classification(model)
    data = load_iris().arrays()
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    stacked = jax.vmap(model.init)(keys)
    together = top_eigenvalues(objective, stacked, data, method=method, iterations=iterations)
    for i, result in enumerate(together):
        alone = top_eigenvalue(objective, jax.tree_util.tree_map(lambda x: x[i], stacked), data, method=method,
                               iterations=iterations, start=np.random.default_rng(0).standard_normal((3, 83))[i])
        assert result.value == pytest.approx(alone.value, rel=1e-9)
