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
