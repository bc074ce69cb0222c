import jax
import numpy as np
import pytest

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.lyapunov import local_exponent
from chaosgd.tangent import tangent_exponents
from problems import quadratic_problem


EIGENVALUES = [0.1, 0.5, 1.0, 2.0, 3.5]


@pytest.mark.parametrize("eta", [0.2, 0.7, 0.9])
def test_tangent_top_k_match_closed_form_on_quadratic_problem(eta):
    objective, data, params = quadratic_problem(EIGENVALUES)
    expected = np.sort(np.log(np.abs(1 - eta * np.array(EIGENVALUES))))[::-1][:3]
    result = tangent_exponents(objective, params, eta, data, epochs=200, k=3)
    np.testing.assert_allclose(result.over(100), expected, atol=1e-6)
    np.testing.assert_allclose(result.slope(100, 200), expected, atol=1e-6)  # the epsilon-ball's estimator
    assert result.finite_time.shape == (200, 3)


@pytest.mark.parametrize("eta", [0.7, 0.9])
def test_epsilon_ball_matches_closed_form_on_quadratic_problem(eta):
    objective, data, params = quadratic_problem(EIGENVALUES)
    rng = np.random.default_rng(1)
    theta = params["theta"]
    copies = np.stack([theta] + [theta + 1e-8 * rng.uniform(-1, 1, theta.size) for _ in range(4)])
    rec = run(objective, {"theta": copies[None]}, eta, data, epochs=150)
    fit = local_exponent(rec.distance[0], window=(50, 150))
    assert fit.exponent == pytest.approx(np.log(np.abs(1 - eta * np.array(EIGENVALUES))).max(), abs=1e-4)


def test_both_estimators_agree_on_the_exponential_phase(blobs):
    model = MLP((6, 16, 3))
    objective = classification(model)
    ball = epsilon_ball(initial_conditions(model, 1), 5)
    rec = run(objective, ball, 10.0, blobs.arrays(), epochs=100)
    fit = local_exponent(rec.distance[0])
    assert fit.exponent > 0.3 and fit.stop < 60               # a transient that saturates
    tangent = tangent_exponents(objective, jax.tree_util.tree_map(lambda x: x[0, 0], ball), 10.0, blobs.arrays(),
                                epochs=100, k=1)
    assert tangent.over(fit.start, fit.stop)[0] == pytest.approx(fit.exponent, rel=0.15)
    # After saturation the tangent estimator still measures, and finds the transient is over.
    assert tangent.over(fit.stop)[0] < 0.5 * fit.exponent


def test_divergence_turns_into_nan_not_a_crash():
    objective, data, params = quadratic_problem(EIGENVALUES)
    result = tangent_exponents(objective, params, 100.0, data, epochs=200)  # |1 - 350| per step: overflows
    assert np.isnan(result.log_growth[-1]).all()
    assert np.isfinite(result.log_growth[:50]).all()
    np.testing.assert_allclose(result.log_growth[20:50, 0], np.log(349.0), rtol=1e-9)


def test_bad_arguments_are_refused():
    objective, data, params = quadratic_problem([1.0, 2.0])
    with pytest.raises(ValueError, match="exceeds"):
        tangent_exponents(objective, params, 0.1, data, epochs=5, k=3)
    with pytest.raises(ValueError, match="eta"):
        tangent_exponents(objective, params, -0.1, data, epochs=5)
