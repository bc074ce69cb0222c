import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from chaosgd import MLP, classification
from chaosgd.datasets import load_iris
from chaosgd.sharpness import top_eigenvalue
from chaosgd.spectrum import (broadened_density, density, density_moments, top_k, top_k_ensemble, trace,
                              trace_ensemble)
from problems import iris_hessian_problem, quadratic_problem


@pytest.fixture(scope="module")
def iris_problem():
    return iris_hessian_problem()


def test_top_k_equals_the_explicit_hessians_largest_eigenvalues(iris_problem):
    objective, data, params, hessian = iris_problem
    eigenvalues = np.linalg.eigvalsh(hessian)
    result = top_k(objective, params, data, 10, iterations=60)
    np.testing.assert_allclose(result.values, eigenvalues[::-1][:10], rtol=1e-10)
    assert result.products == 60 and result.values.dtype == np.float64 and np.all(result.residuals < 1e-8)
    # Each Ritz vector is a unit eigenvector whose residual the bound |beta_m s_mi| gives.
    residuals = np.linalg.norm(result.vectors @ hessian - result.values[:, None] * result.vectors, axis=1)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1, rtol=1e-10)
    assert np.all(residuals < 1e-8)


def test_top_1_is_the_sharpness_from_the_same_lanczos_loop(iris_problem):
    objective, data, params, _ = iris_problem
    start = np.random.default_rng(3).standard_normal(83)
    ours = top_k(objective, params, data, 1, iterations=12, start=start)
    sharpness = top_eigenvalue(objective, params, data, iterations=12, start=start)
    assert ours.values[0] == sharpness.value and ours.residuals[0] == sharpness.residual


def test_quadratic_closed_form_and_the_preconditioned_spectrum():
    """L = 1/2 theta^T A theta: the Hessian is A; with scale s, diag(s) A diag(s)."""
    objective, data, params = quadratic_problem([-3.0, 0.1, 0.5, 1.0, 2.0, 4.0, 7.0, 9.0])
    result = top_k(objective, params, data, 3, iterations=8)
    np.testing.assert_allclose(result.values, [9.0, 7.0, 4.0], rtol=1e-12)
    s = np.linspace(0.5, 2.0, 8)
    scaled = top_k(objective, params, data, 3, iterations=8, scale=s)
    np.testing.assert_allclose(scaled.values, np.linalg.eigvalsh(s[:, None] * data["A"] * s)[::-1][:3], rtol=1e-12)
    # Hutch++ whose sketch spans the whole space is exact: tr A = 20.6, no stochastic part.
    exact = trace(objective, params, data, products=30, scale=None)
    assert exact.estimate == pytest.approx(20.6, rel=1e-12) and exact.stderr < 1e-12 and exact.products == 26
    # SLQ with as many steps as parameters: every probe's nodes are A's eigenvalues.
    slq = density(objective, params, data, steps=8, probes=3, scale=s)
    np.testing.assert_allclose(slq.nodes, np.tile(np.linalg.eigvalsh(s[:, None] * data["A"] * s), (3, 1)),
                               atol=1e-12)


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_within_four_standard_errors(iris_problem, method):
    objective, data, params, hessian = iris_problem
    result = trace(objective, params, data, method=method, products=30, seed=1)
    assert abs(result.estimate - np.trace(hessian)) < 4 * result.stderr and result.products == 30


def test_hutch_plus_plus_beats_hutchinson_on_a_decaying_spectrum():
    """Eigenvalues 1/i^2 (i = 1..200): 60 products of Hutch++ capture the top exactly; over 24 probe sets its error
    is far below Hutchinson's, and both stay within their stated standard errors."""
    eigenvalues = 1.0 / np.arange(1, 201) ** 2
    objective, data, params = quadratic_problem(eigenvalues)
    stacked = jax.tree_util.tree_map(lambda x: np.repeat(x[None], 24, axis=0), params)
    errors = {}
    for method in ("hutchinson", "hutch++"):
        result = trace_ensemble(objective, stacked, data, method=method, products=60, seed=7)
        error = result.estimate - eigenvalues.sum()
        assert np.mean((error / result.stderr) ** 2) < 3   # the stated error is the error's size
        errors[method] = np.sqrt(np.mean(error ** 2))
    assert errors["hutch++"] < errors["hutchinson"] / 5


def test_slq_moments_match_traces_of_powers(iris_problem):
    objective, data, params, hessian = iris_problem
    result = density(objective, params, data, steps=30, probes=40, seed=2)
    assert result.products == 1200 and result.size == 83
    np.testing.assert_allclose(result.weights.sum(axis=1), 1, rtol=1e-10)
    orders = [0, 1, 2, 3, 4]
    estimate, stderr = density_moments(result, orders)
    exact = np.array([np.trace(np.linalg.matrix_power(hessian, j)) / 83 for j in orders])
    assert estimate[0] == pytest.approx(1, rel=1e-10)
    assert np.all(np.abs(estimate[1:] - exact[1:]) < 4 * stderr[1:])
    grid = np.linspace(result.nodes.min() - 1, result.nodes.max() + 1, 4001)
    phi = broadened_density(result, grid, sigma=0.05)
    assert np.trapezoid(phi, grid) == pytest.approx(1, rel=1e-6)
    assert np.trapezoid(grid * phi, grid) == pytest.approx(estimate[1], rel=1e-6)


def test_each_ensemble_member_gets_its_own_values_whatever_its_neighbours():
    model = MLP((4, 10, 3))
    objective, data = classification(model), load_iris().arrays()
    stacked = jax.vmap(model.init)(jax.random.split(jax.random.PRNGKey(5), 3))
    together = top_k_ensemble(objective, stacked, data, 4, iterations=40)
    traces = trace_ensemble(objective, stacked, data, products=12, seed=4)
    assert together.values.shape == (3, 4) and together.vectors.shape == (3, 4, 83)
    # The same networks in another order, each keeping its member index (its random start), beside other
    # neighbours: each gets its own values (the same shapes as above: no second compilation).
    order = [2, 0, 1]
    shuffled = jax.tree_util.tree_map(lambda x: x[np.array(order)], stacked)
    again = top_k_ensemble(objective, shuffled, data, 4, iterations=40, members=order)
    again_traces = trace_ensemble(objective, shuffled, data, products=12, seed=4, members=order)
    for j, i in enumerate(order):
        np.testing.assert_allclose(again.values[j], together.values[i], rtol=1e-9)
        assert again_traces.estimate[j] == pytest.approx(traces.estimate[i], rel=1e-9)
    assert np.ptp(together.values[:, 0]) > 0  # the members differ: the comparison is not of equal networks


def test_a_diverged_member_gets_nan_and_the_others_their_values(iris_problem):
    objective, data, params, hessian = iris_problem
    stacked = jax.tree_util.tree_map(lambda x: np.stack([x, np.full_like(x, np.nan)]), params)
    top = top_k_ensemble(objective, stacked, data, 2, iterations=40)
    np.testing.assert_allclose(top.values[0], np.linalg.eigvalsh(hessian)[::-1][:2], rtol=1e-10)
    assert np.all(np.isnan(top.values[1])) and np.all(np.isnan(top.residuals[1]))
    assert np.isnan(trace_ensemble(objective, stacked, data, products=6).estimate[1])


@pytest.mark.parametrize("call, match", [
    (lambda o, d, p: top_k(o, p, d, 0), "k must be"),
    (lambda o, d, p: top_k(o, p, d, 2, iterations=1), "iterations must be >= k"),
    (lambda o, d, p: top_k(o, p, d, 2, start=np.ones(3)), "start must be"),
    (lambda o, d, p: trace(o, p, d, method="xtrace"), "hutch\\+\\+"),
    (lambda o, d, p: trace(o, p, d, method="hutch++", products=3), "products >= 4"),
    (lambda o, d, p: trace(o, p, d, scale=np.ones(5)), "scale must be"),
    (lambda o, d, p: density(o, p, d, steps=0), "steps must be"),
    (lambda o, d, p: density_moments(density(o, p, d, steps=2, probes=2), [-1]), "orders"),
    (lambda o, d, p: broadened_density(density(o, p, d, steps=2, probes=2), [0.0], sigma=-1), "sigma"),
])
def test_bad_input_is_refused_with_what_is_allowed(call, match):
    objective, data, params = quadratic_problem([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=match):
        call(objective, data, params)


def test_the_command_writes_the_spectrum_and_its_plot(tmp_path):
    import argparse
    import json

    from chaosgd.cli.spectrum import add_spectrum, cmd_spectrum

    parser = argparse.ArgumentParser()
    add_spectrum(parser)
    args = parser.parse_args(["iris", "--k", "3", "--steps", "10", "--probes", "2", "--trace-products", "6",
                              "--out", str(tmp_path)])
    args.command = "spectrum"
    assert cmd_spectrum(args) == 0
    summary = json.loads((tmp_path / "spectrum.json").read_text())
    values = summary["top_k"]["values"]
    assert summary["parameters"] == 83 and len(values) == 3 and values == sorted(values, reverse=True)
    assert summary["trace"]["products"] == 6 and np.shape(summary["density"]["nodes"]) == (2, 10)
    assert (tmp_path / "density.png").stat().st_size > 0
    args.epochs, args.eta = 0, 1.0
    with pytest.raises(ValueError, match="--epochs"):
        cmd_spectrum(args)


def test_an_exhausted_krylov_space_restarts_instead_of_inventing_eigenvalues():
    # After 7 epochs at eta = 3 the Iris network's Hessian has few directions its gradient-shaped start reaches: the
    # Krylov space is exhausted (beta ~ 1e-34) long before 83 steps. Normalising that roundoff made Ritz values of
    # 1e5..1e10; now every Ritz value is an eigenvalue and every quadrature node inside the spectrum.
    import jax.numpy as jnp

    from chaosgd.dynamics import FULL_BATCH_GD
    from chaosgd.sharpness import advance

    model = MLP((4, 10, 3))
    objective = classification(model)
    data = jax.tree_util.tree_map(jnp.asarray, load_iris().arrays())
    params = model.init(jax.random.PRNGKey(0))
    params, _ = advance((objective, FULL_BATCH_GD, 120, 0), params, FULL_BATCH_GD.optimizer.init(params),
                         jnp.float64(3.0), data, jnp.int32(0), jnp.int32(0), 7)
    flat, unravel = ravel_pytree(params)
    exact = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda f: objective.loss(unravel(f), data)[0])(flat)))
    top = top_k(objective, params, data, 20, iterations=83)
    np.testing.assert_allclose(top.values, exact[::-1][:20], rtol=1e-8, atol=1e-12)
    slq = density(objective, params, data, steps=80, probes=2)
    assert exact[0] - 1e-9 <= slq.nodes.min() and slq.nodes.max() <= exact[-1] + 1e-9
