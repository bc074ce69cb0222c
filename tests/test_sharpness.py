import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from chaosgd import MLP, classification
from chaosgd.datasets import load_iris
from chaosgd.dynamics import UpdateRule, batch_order
from chaosgd.optimizers import Optimizer
from chaosgd.sharpness import top_eigenvalue, top_eigenvalues, track_sharpness
from problems import iris_hessian_problem, quadratic_problem


@pytest.fixture(scope="module")
def iris_problem():
    objective, data, params, hessian = iris_hessian_problem()
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


def test_heavy_ball_tracks_the_hessian_against_its_own_limit():
    objective, data, params = quadratic_problem([0.5, 1.0, 3.0])
    rule = UpdateRule(Optimizer("momentum", momentum=0.5))
    track = track_sharpness(objective, params, 0.4, data, epochs=6, every=2, rule=rule)
    np.testing.assert_allclose(track.value, 3.0, rtol=1e-8)
    assert track.kind == "hessian" and track.edge_of_stability == pytest.approx(2 * 1.5 / 0.4)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])
def test_the_preconditioner_is_the_one_of_optaxs_own_last_step(name):
    """P from Optimizer.preconditioner equals what optax's update divides by: -eta m / u for Adam (m its first
    moment after the step), -eta g / u for RMSprop; and the preconditioned sharpness along a quadratic is the top
    eigenvalue of P^-1/2 A P^-1/2, NaN before the first step."""
    import optax

    objective, data, params = quadratic_problem([0.5, 1.0, 3.0])
    eta, opt = 0.05, Optimizer(name)
    tx = opt.transformation(eta)
    theta, state = params["theta"], opt.init(params)
    expected = [np.nan]
    for _ in range(4):
        g = data["A"] @ theta
        update, state = tx.update({"theta": g}, state, {"theta": theta})
        u = np.asarray(update["theta"])
        moved = np.asarray(optax.tree_utils.tree_get(state, "mu")["theta"]) if name == "adam" else g
        p = -eta * moved / u
        np.testing.assert_allclose(np.asarray(opt.preconditioner(state)["theta"]), p, rtol=1e-9)
        theta = theta + u
        expected.append(np.linalg.eigvalsh(data["A"] / np.sqrt(np.outer(p, p)))[-1])
    track = track_sharpness(objective, params, eta, data, epochs=4, every=1, iterations=3, rule=UpdateRule(opt))
    assert track.kind == "preconditioned" and np.isnan(track.value[0])
    np.testing.assert_allclose(track.value[1:], expected[1:], rtol=1e-8)
    assert track.edge_of_stability == pytest.approx(38 / eta if name == "adam" else 2 / eta)


def test_batch_sharpness_is_the_mean_curvature_of_each_minibatch_along_its_gradient(blobs):
    """Andreyev & Beneventano (2024): E_B[g_B . H_B g_B / |g_B|^2], here over the epoch's minibatches, checked
    against explicit Hessians of each batch's loss."""
    model = MLP((6, 4, 3))
    objective, data = classification(model), blobs.arrays()
    params = model.init(jax.random.PRNGKey(0))
    rule = UpdateRule(Optimizer("sgd"), batch_size=50)   # 120 examples: batches of 50, 50 and 20 (padded)
    flat, unravel = ravel_pytree(params)
    index, weight = batch_order(rule, 120, 0, 0, 0)
    curvatures = []
    for rows, w in zip(np.asarray(index), np.asarray(weight)):
        rows = rows[w > 0]
        batch = {"x_train": data["x_train"][rows], "y_train": data["y_train"][rows]}
        loss = lambda f: objective.loss(unravel(f), batch)[0]  # noqa: E731
        g, hessian = np.asarray(jax.grad(loss)(flat)), np.asarray(jax.hessian(loss)(flat))
        curvatures.append(g @ hessian @ g / (g @ g))
    track = track_sharpness(objective, params, 0.5, data, epochs=0, rule=rule)
    assert track.kind == "batch" and track.value[0] == pytest.approx(np.mean(curvatures), rel=1e-9)
    with pytest.raises(ValueError, match="adamw"):
        track_sharpness(objective, params, 0.5, data, epochs=0, rule=UpdateRule(Optimizer("adamw")))
    with pytest.raises(ValueError, match="hessian_examples"):
        track_sharpness(objective, params, 0.5, data, epochs=0, rule=rule, hessian_examples=10)
    with pytest.raises(ValueError, match="constant schedule"):
        track_sharpness(objective, params, 0.5, data, epochs=0,
                        rule=UpdateRule(Optimizer(schedule="step", decay_every=2)))


def test_each_optimiser_states_its_limit_once_in_its_spec():
    import math

    from chaosgd.optimizers import SPECS, Optimizer
    for name, spec in SPECS.items():
        limit = Optimizer(name).stability_limit(0.1)
        assert math.isfinite(limit) == (spec.limit is not None) == bool(spec.limit_text) != bool(spec.no_limit)
    assert Optimizer("adam").stability_limit(0.1) == pytest.approx(380)  # 38/eta at b1 = 0.9
    assert Optimizer("momentum", momentum=0.5).stability_limit(1.0) == 3.0
    assert Optimizer("nesterov", momentum=0.5).stability_limit(1.0) == 1.5
    with pytest.raises(ValueError, match="decoupled weight decay"):
        from chaosgd.dynamics import UpdateRule
        from chaosgd.sharpness import sharpness_kind
        sharpness_kind(UpdateRule(Optimizer("adamw")), 10)


def test_tracking_the_top_k_and_the_density_along_training(iris_problem, tmp_path):
    from chaosgd.spectrum import SpectralDensity, density_moments

    objective, data, params, eigenvalues = iris_problem
    track = track_sharpness(objective, params, 0.5, data, epochs=6, every=4, iterations=40, top=3,
                            density_at=[0, 3])
    # The density epoch 3 is visited besides the every-4 grid; the top-k's first is the sharpness.
    np.testing.assert_array_equal(track.epoch, [0, 3, 4, 6])
    assert track.top.shape == (4, 3) and np.array_equal(track.top[:, 0], track.value)
    np.testing.assert_allclose(track.top[0], eigenvalues[::-1][:3], rtol=1e-9)
    np.testing.assert_array_equal(track.density_epoch, [0, 3])
    # At epoch 0, the quadrature's first two moments against tr(H)/P and tr(H^2)/P, within 4 standard errors.
    moments, stderr = density_moments(SpectralDensity(track.density_nodes[0], track.density_weights[0], 83, 0),
                                      orders=(0, 1, 2))
    exact = [1.0, eigenvalues.mean(), (eigenvalues ** 2).mean()]
    assert moments[0] == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.abs(moments[1:] - exact[1:]) < 4 * stderr[1:])
    # Kept by a task file, and drawn.
    from chaosgd.experiments import preset
    from chaosgd.experiments.problem import run_task, tasks
    from chaosgd.experiments.store import RunDir
    config = preset("iris", quick=True).with_values(**{"training.etas": (0.5,), "training.epochs": 6,
                                                        "ensemble.initial": 1, "ensemble.copies": 1})
    task = tasks(config)[0]
    store = RunDir(tmp_path)
    store.write_task(config, task, run_task(config, task), seconds=1.0, sharpness=track)
    kept = store.load_task(task, config.hash()).sharpness
    for name in ("top", "density_epoch", "density_nodes", "density_weights", "value"):
        np.testing.assert_array_equal(getattr(kept, name), getattr(track, name))
    import matplotlib
    matplotlib.use("Agg")
    from chaosgd import plots
    plots.save(plots.plot_spectral_density(kept), tmp_path / "density.png")
    plots.save(plots.plot_sharpness([kept]), tmp_path / "sharpness.png")


def test_tracking_the_spectrum_is_refused_where_it_has_no_meaning(iris_problem):
    objective, data, params, _ = iris_problem
    with pytest.raises(ValueError, match="top must be >= 1, and > 1 only with method lanczos"):
        track_sharpness(objective, params, 0.5, data, epochs=2, every=1, method="power", top=2)
    with pytest.raises(ValueError, match="density_at"):
        track_sharpness(objective, params, 0.5, data, epochs=2, every=1, density_at=[3])
