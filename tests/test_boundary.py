import dataclasses
import json

import numpy as np
import pytest

from chaosgd.boundary import Grid, Setting, hyperparameters, loss, network, problem, trainability_grid
from chaosgd.boundary_analysis import boundary_distance, boundary_pixel, fastest, profile, zoom

# A linear network of one layer is linear regression, f(x) = x W / n: GD on it is the linear map
# W <- (I - eta A) W + const with A = 2 X^T X / (N n^2), which converges iff eta < 2 / max eig A and whose
# Lyapunov exponent is ln max_i |1 - eta a_i|; the initial weights' scale changes neither.
LINEAR = Setting(width=4, depth=1, nonlinearity="identity", data_ratio=2, target=0.9, steps=300)
LINEAR_GRID = Grid("eta", "init_scale", (-1.0, 2.0), (-1.0, 1.0), (3, 10))


def linear_spectrum(setting):
    _, x, _, _ = problem(setting)
    x = np.asarray(x)
    return np.linalg.eigvalsh(2 * x.T @ x / (x.shape[0] * setting.width ** 2))


@pytest.fixture(scope="module")
def linear():
    return trainability_grid(LINEAR, LINEAR_GRID)


def test_the_notebook_setting_has_as_many_points_as_parameters():
    s = Setting()
    assert (s.width, s.depth, s.nonlinearity, s.steps) == (16, 2, "tanh", 500)
    assert s.n_parameters == 16 * 16 + 16 == s.n_points == 272
    weights, x, y, direction = problem(s)
    assert [w.shape for w in weights] == [(16, 16), (16, 1)] and x.shape == (272, 16) and y.shape == (272, 1)
    assert sum(float(np.sum(np.asarray(d) ** 2)) for d in direction) == pytest.approx(1.0)
    assert all(np.asarray(a).dtype == np.float64 for a in (*weights, x, y))


def test_network_is_the_mean_field_tanh_network():
    weights, x, y, _ = problem(Setting())
    w1, w2 = (np.asarray(w) for w in weights)
    x, y = np.asarray(x), np.asarray(y)
    h = np.tanh(np.sqrt(2) * (x @ w1 / 4))
    expected = (h @ w2 / 4) / 4  # the last layer's 1/sqrt(n), and the output's own 1/sqrt(n): 1/n in all
    np.testing.assert_allclose(np.asarray(network(weights, x)), expected, rtol=1e-12)
    assert float(loss(weights, x, y)) == pytest.approx(np.mean((expected - y) ** 2), rel=1e-12)


def test_per_layer_learning_rates_follow_the_axes():
    grid = Grid("eta_first", "eta_last", (0.0, 1.0), (2.0, 3.0), (2, 2))
    hp = hyperparameters(Setting(), grid)
    np.testing.assert_allclose(hp[:, 0], [1, 10, 1, 10])  # columns: the first layer's
    np.testing.assert_allclose(hp[:, 1], [100, 100, 1000, 1000])  # rows: the last layer's
    np.testing.assert_allclose(hp[:, 2:], [[1, 0, 0, 0]] * 4)  # scale, offset, momentum, L2: the setting's
    hp = hyperparameters(Setting(eta=0.5), Grid("init_offset", "eta", (-1.0, 0.0), (0.0, 1.0), (2, 2)))
    np.testing.assert_allclose(hp[:, 3], [0.1, 1, 0.1, 1])
    np.testing.assert_allclose(hp[:, :2], [[1, 1], [1, 1], [10, 10], [10, 10]])


def test_linear_regression_converges_below_two_over_the_sharpness(linear):
    a = linear_spectrum(LINEAR)
    eta = linear.grid.x
    expected = eta < 2 / a.max()
    assert 0 < expected.sum() < eta.size  # the boundary lies inside the grid
    for row in range(LINEAR_GRID.shape[0]):  # the scale of the initial weights moves nothing
        np.testing.assert_array_equal(linear.converged[row], expected)
    assert np.all(linear.finite[linear.converged])


def test_linear_regression_exponent_is_that_of_the_linear_map(linear):
    a = linear_spectrum(LINEAR)
    for eta, lam in zip(linear.grid.x, linear.lyapunov[0]):
        exact = np.log(np.abs(1 - eta * a).max())
        if np.isfinite(lam):
            assert lam == pytest.approx(exact, abs=0.015)  # (ln|cos| / N: the copy's first alignment)
    assert np.isnan(linear.lyapunov[~linear.finite]).all()


def test_momentum_moves_the_linear_boundary_and_exponent_as_the_heavy_ball_map():
    """Heavy ball on linear regression, per eigenvalue a of A: (w, v) <- [[1 - eta a, -eta beta], [a, beta]] (w, v),
    whose eigenvalues solve mu^2 - (1 + beta - eta a) mu + beta = 0: it converges iff eta a_max < 2 (1 + beta), and
    the exponent is ln of the largest |mu|."""
    a = linear_spectrum(LINEAR)
    grid = Grid("eta", "momentum", (0.5, 1.5), (-2.0, -0.05), (4, 16))
    result = trainability_grid(LINEAR, grid)
    for row, beta in enumerate(grid.y):
        expected = grid.x < 2 * (1 + beta) / a.max()
        assert 0 < expected.sum() < expected.size  # the boundary moves with beta, inside the grid
        np.testing.assert_array_equal(result.converged[row], expected)
        for eta, lam in zip(grid.x, result.lyapunov[row]):
            radius = max(np.abs(np.roots([1, -(1 + beta - eta * ai), beta])).max() for ai in a)
            if np.isfinite(lam):
                assert lam == pytest.approx(np.log(radius), abs=0.02)
    assert np.isfinite(result.lyapunov[result.converged]).all()


def test_l2_moves_the_linear_boundary_to_two_over_the_sharpness_plus_l2():
    a = linear_spectrum(LINEAR)
    grid = Grid("l2", "eta", (-2.0, 0.0), (-0.5, 1.5), (16, 4))  # (the rate on the rows: either order)
    result = trainability_grid(LINEAR, grid, lyapunov=False)
    for col, l2 in enumerate(grid.x):
        expected = grid.y < 2 / (a.max() + l2)
        assert 0 < expected.sum() < expected.size
        np.testing.assert_array_equal(result.converged[:, col], expected)


def test_momentum_and_l2_that_are_not_axes_act_on_every_pixel():
    a = linear_spectrum(LINEAR)
    grid = Grid("eta", "init_scale", (0.5, 1.5), (-1.0, 1.0), (2, 16))
    for options, limit in (({"momentum": 0.6}, 2 * 1.6 / a.max()), ({"l2": 0.3}, 2 / (a.max() + 0.3))):
        result = trainability_grid(dataclasses.replace(LINEAR, **options), grid, lyapunov=False)
        expected = grid.x < limit
        assert 0 < expected.sum() < expected.size and (expected != (grid.x < 2 / a.max())).any()
        for row in result.converged:
            np.testing.assert_array_equal(row, expected)


def test_a_value_that_an_axis_replaces_is_refused_and_a_momentum_zoom_stays_below_one():
    with pytest.raises(ValueError, match=r"momentum = 0.5 is set, but the grid's axes \(eta x momentum\)"):
        trainability_grid(dataclasses.replace(LINEAR, momentum=0.5), Grid("eta", "momentum", (0.0, 1.0),
                                                                          (-2.0, -0.1), (2, 2)))
    with pytest.raises(ValueError, match="eta = 2.0 is set, but the grid's axes"):
        trainability_grid(Setting(eta=2.0), Grid(shape=(2, 2)))  # (per-layer rates replace eta too)
    parent = Grid("eta", "momentum", (-1.0, 4.0), (-2.0, -0.02), (64, 64))
    frame = zoom(parent, (60, 32), 2.0)  # (centred near the top: the window slides down to end where it does)
    assert frame.y_range[1] == pytest.approx(-0.02) and frame.y.max() < 1
    assert frame.y_range[1] - frame.y_range[0] == pytest.approx((parent.y_range[1] - parent.y_range[0]) / 2)


def test_without_momentum_and_l2_a_grid_folder_is_written_as_before(tmp_path):
    result = trainability_grid(LINEAR, Grid("eta", "init_scale", shape=(2, 2)), lyapunov=False, folder=tmp_path)
    assert not {"momentum", "l2"} & set(json.loads((tmp_path / "grid.json").read_text())["setting"])
    quickest = fastest(result)  # (no exponents measured: no share of expanding pixels, rather than 0)
    assert quickest["pixels"] >= 1 and quickest["positive_peak"] is None is quickest["positive_peak_all_converged"]


def test_divergence_is_a_result(linear):
    diverged = ~linear.finite
    assert diverged.any()
    assert not linear.converged[diverged].any() and np.all(linear.measure[diverged] == 1e6)
    assert np.all(linear.time_to_target[diverged] == -1)
    assert np.all(np.isnan(linear.lyapunov_peak[diverged]))


def test_time_to_target_is_first_step_below_it_and_shortens_with_eta(linear):
    times = linear.time_to_target[0][linear.converged[0]]
    assert np.all(times >= 0)
    below = linear.grid.x[linear.converged[0]] < 1 / linear_spectrum(LINEAR).max()
    assert np.all(np.diff(times[below]) <= 0)  # (1 - eta a)^t shrinks faster at larger eta, up to 1 / a_max


def test_grid_resumes_from_its_blocks_and_refuses_other_parameters(tmp_path, linear):
    first = trainability_grid(LINEAR, LINEAR_GRID, folder=tmp_path, block=8)
    assert first.computed == 30 and len(list(tmp_path.glob("block-*.npz"))) == 4
    (tmp_path / "block-000001.npz").unlink()  # as if stopped before the second block was written
    again = trainability_grid(LINEAR, LINEAR_GRID, folder=tmp_path, block=8)
    assert again.computed == 8
    for name in ("converged", "measure", "time_to_target", "lyapunov"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
        np.testing.assert_allclose(getattr(again, name), getattr(linear, name), rtol=1e-9)
    assert json.loads((tmp_path / "grid.json").read_text())["grid"]["shape"] == [3, 10]
    with pytest.raises(ValueError, match="other parameters"):
        trainability_grid(LINEAR, LINEAR_GRID, folder=tmp_path, block=16)
    # A damaged block (cut short by a full disk, say) is computed again, with a warning naming it.
    damaged = tmp_path / "block-000002.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.warns(UserWarning, match="block-000002.npz cannot be read"):
        repaired = trainability_grid(LINEAR, LINEAR_GRID, folder=tmp_path, block=8)
    assert repaired.computed == 8
    np.testing.assert_array_equal(repaired.converged, first.converged)
    (tmp_path / "grid.json").write_text("{not json")
    with pytest.raises(ValueError, match="grid.json cannot be read"):
        trainability_grid(LINEAR, LINEAR_GRID, folder=tmp_path, block=8)


def test_float32_classifies_like_float64_and_refuses_the_epsilon_copy(linear):
    single = trainability_grid(LINEAR, LINEAR_GRID, dtype="float32", lyapunov=False)
    np.testing.assert_array_equal(single.converged, linear.converged)
    assert single.dtype == "float32" and np.isnan(single.lyapunov).all()
    with pytest.raises(ValueError, match="float64"):
        trainability_grid(LINEAR, LINEAR_GRID, dtype="float32")


def test_zoom_is_centred_on_the_pixel_and_narrower():
    grid = Grid(shape=(5, 9))
    z = zoom(grid, (2, 4), 10)
    assert z.shape == grid.shape
    assert np.mean(z.x_range) == pytest.approx(1.5) and np.mean(z.y_range) == pytest.approx(1.5)
    assert z.x_range[1] - z.x_range[0] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="outside"):
        zoom(grid, (5, 0), 2)
    with pytest.raises(ValueError, match=">= 1"):
        zoom(grid, (0, 0), 0.5)


def test_boundary_pixel_distance_and_profile(linear):
    converged = np.zeros((6, 6), dtype=bool)
    converged[:, :2] = True
    assert boundary_pixel(converged) in {(2, 1), (2, 2), (3, 1), (3, 2)}
    d = boundary_distance(converged)
    np.testing.assert_array_equal(d[0], [2, 1, -1, -2, -3, -4])
    with pytest.raises(ValueError, match="no boundary"):
        boundary_pixel(np.ones((4, 4), dtype=bool))
    rows = profile(linear)["rows"]
    assert sum(r["pixels"] for r in rows) == linear.converged.sum()


@pytest.mark.parametrize("options, message", [
    ({"width": 0}, "width"), ({"steps": 10}, "steps"), ({"nonlinearity": "gelu"}, "tanh, relu, identity"),
    ({"target": 1.5}, "target"), ({"data_ratio": -1}, "data_ratio"),
    ({"momentum": 1.0}, r"momentum \(--momentum\) must be in \[0, 1\)"),
    ({"l2": -1e-3}, r"l2 \(--l2\) must be a finite number >= 0"),
    ({"l2": float("inf")}, "finite number"),
])
def test_bad_setting_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Setting(**options)


@pytest.mark.parametrize("options, message", [
    ({"x_axis": "eta_first", "y_axis": "init_scale"}, "allowed: eta_first x eta_last"),
    ({"x_range": (2.0, 1.0)}, "low < high"), ({"shape": (1, 8)}, "shape"),
    ({"y_range": (300.0, 400.0)}, "float64's range"),
    ({"x_axis": "eta", "y_axis": "momentum", "y_range": (-2.0, 0.0)}, r"axis \(y\) must stay below 1.*--y-range"),
    ({"x_axis": "momentum", "y_axis": "eta", "x_range": (-2.0, -1e-17)}, r"momentum axis \(x\)"),
    ({"x_axis": "momentum", "y_axis": "l2"}, "allowed:.*eta x momentum, eta x l2"),
])
def test_bad_grid_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        Grid(**options)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="float64, float32"):
        trainability_grid(LINEAR, LINEAR_GRID, dtype="float16")
    with pytest.raises(ValueError, match="block"):
        trainability_grid(LINEAR, LINEAR_GRID, block=0)
    with pytest.raises(ValueError, match="need depth >= 2"):
        trainability_grid(Setting(depth=1), Grid(shape=(4, 4)))
    with pytest.raises(ValueError, match="more than 67,108,864"):
        trainability_grid(LINEAR, Grid("eta", "init_scale", shape=(10_000, 10_000)))
    with pytest.raises(ValueError, match="seed must be an integer in"):
        Setting(seed=2**40)


def test_command_writes_results_images_and_resumes(tmp_path, capsys):
    import argparse

    from chaosgd.cli.boundary import add_boundary, cmd_boundary

    parser = argparse.ArgumentParser()
    add_boundary(parser)
    argv = ["--out", str(tmp_path), "--width", "3", "--steps", "30", "--resolution", "16", "--target", "0.6", "--quiet"]
    assert cmd_boundary(parser.parse_args(argv)) == 0
    summary = json.loads((tmp_path / "boundary.json").read_text())
    assert summary["grid"]["shape"] == [16, 16] and "below 1" in summary["convergence"]
    dimension = summary["dimension"]
    assert 0 < summary["converged_fraction"] < 1 and dimension["slope_spread"][0] <= dimension["value"]
    with np.load(tmp_path / "boundary.npz") as saved:
        assert saved["converged"].shape == (16, 16) and saved["x"].size == 16
    assert (tmp_path / "boundary.png").stat().st_size > 0
    fastest = summary["fastest"]  # (the tenth of the pixels that reached the target with the shortest times)
    assert fastest["pixels"] >= 1 and 0 <= fastest["positive_peak"] <= 1
    with np.load(tmp_path / "boundary.npz") as saved:
        times = saved["time_to_target"]
    assert fastest["time_range"][0] == times[times >= 0].min()
    assert "fastest tenth" in capsys.readouterr().out
    assert cmd_boundary(parser.parse_args(argv)) == 0  # resumed: nothing trained again
    out = capsys.readouterr().out
    assert "results and images in" in out and "(this grid read back, nothing trained)" in out
    with pytest.raises(ValueError, match="--no-lyapunov"):
        cmd_boundary(parser.parse_args(argv + ["--dtype", "float32"]))
    with pytest.raises(ValueError, match="allowed"):
        cmd_boundary(parser.parse_args(["--out", str(tmp_path / "b"), "--x", "eta", "--y", "eta_last"]))
