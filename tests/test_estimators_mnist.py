"""Slow: the two estimators on the paper's workload (MNIST 784-64-10 tanh, eta = 10). Run with ``pytest -m slow``."""

import jax
import pytest

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.datasets import load
from chaosgd.lyapunov import local_exponent
from chaosgd.tangent import tangent_exponents


@pytest.mark.slow
def test_tangent_and_epsilon_ball_agree_on_the_exponential_phase(mnist_dir):
    dataset = load("mnist", path=mnist_dir)
    model = MLP((784, 64, 10))
    objective = classification(model)
    ball = epsilon_ball(initial_conditions(model, 1, seed=0), 5, epsilon=1e-8, seed=0)
    records = run(objective, ball, 10.0, dataset.arrays(), epochs=45)
    fit = local_exponent(records.distance[0])
    tangent = tangent_exponents(objective, jax.tree_util.tree_map(lambda x: x[0, 0], ball), 10.0, dataset.arrays(),
                                epochs=fit.stop)
    print(f"epsilon-ball {fit.exponent:.3f} over [0, {fit.stop}] (R2 {fit.r2:.3f}); "
          f"tangent {tangent.over(0, fit.stop)[0]:.3f}")
    assert fit.positive
    assert tangent.over(0, fit.stop)[0] == pytest.approx(fit.exponent, rel=0.2)


@pytest.mark.slow
def test_under_adam_the_two_estimators_agree_on_the_exponential_phase(mnist_dir):
    """Adam (full batch) at eta = 0.3 on the first 2,000 MNIST images, where its exponent is clearly positive: the
    tangent estimator on parameters + Adam's moments, fitted like the epsilon-ball over the epsilon-ball's window,
    gives the same slope (measured: 0.526 and 0.565 over [0, 23])."""
    from chaosgd.dynamics import UpdateRule
    from chaosgd.optimizers import Optimizer

    d = load("mnist", path=mnist_dir)
    data = {"x_train": d.x_train[:2000], "y_train": d.y_train[:2000], "x_test": d.x_test[:2000],
            "y_test": d.y_test[:2000]}
    model = MLP((784, 64, 10))
    objective, rule = classification(model), UpdateRule(Optimizer("adam"))
    ball = epsilon_ball(initial_conditions(model, 1, seed=0), 3, epsilon=1e-8, seed=0)
    records = run(objective, ball, 0.3, data, epochs=60, rule=rule)
    fit = local_exponent(records.distance[0])
    tangent = tangent_exponents(objective, jax.tree_util.tree_map(lambda x: x[0, 0], ball), 0.3, data,
                                epochs=fit.stop, rule=rule)
    slope = tangent.slope(fit.start, fit.stop)[0]
    print(f"Adam: epsilon-ball {fit.exponent:.3f} over [{fit.start}, {fit.stop}] (R2 {fit.r2:.3f}); "
          f"tangent {slope:.3f}")
    assert fit.positive and fit.stop >= 15
    assert slope == pytest.approx(fit.exponent, rel=0.15)
