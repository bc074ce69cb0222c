import numpy as np
import pytest

from chaosgd.lyapunov import local_exponent, network_exponent, saturation_epoch, settled_epoch


def planted(slope, tau, epochs=120, start=-18.0, copies=5, noise=0.0, seed=0):
    """d_j(t) = exp(start + slope * min(t, tau) + noise), the paper's exponential-then-plateau shape."""
    rng = np.random.default_rng(seed)
    t = np.arange(epochs + 1)
    y = start + slope * np.minimum(t, tau)
    return np.exp(y[None, :] + noise * rng.standard_normal((copies, t.size)))


@pytest.mark.parametrize("slope, tau", [(0.68, 30), (0.3, 70), (1.5, 12)])
def test_planted_exponential_then_plateau_returns_slope_and_window(slope, tau):
    fit = local_exponent(planted(slope, tau))
    assert (fit.start, fit.stop) == (0, tau)
    assert fit.exponent == pytest.approx(slope, rel=1e-10)
    assert fit.r2 == pytest.approx(1.0) and fit.positive and fit.n_copies == 5


def test_noisy_planted_curve_still_finds_the_knee():
    fit = local_exponent(planted(0.6, 28, noise=0.3, seed=3))
    assert abs(fit.stop - 28) <= 2
    assert fit.exponent == pytest.approx(0.6, abs=0.03) and fit.positive


def test_shrinking_distance_gives_a_negative_not_positive_exponent():
    t = np.arange(101)
    d = np.exp(-18.0 - 0.2 * t)[None, :].repeat(3, axis=0)
    fit = local_exponent(d)
    assert fit.exponent == pytest.approx(-0.2, rel=1e-10) and not fit.positive
    assert fit.stop == 40                                   # quiet: settled after its first 40 epochs
    assert local_exponent(d, quiet_rise=None).stop == 100   # without the quiet rule the window runs to the end


def test_flat_noisy_distance_is_not_positive():
    rng = np.random.default_rng(0)
    d = np.exp(-18.4 + 0.01 * rng.standard_normal((5, 151)))
    fit = local_exponent(d)
    assert abs(fit.exponent) < 0.01 and not fit.positive


def test_thresholds_are_configurable_and_window_can_be_fixed():
    d = planted(0.04, 60)
    assert not local_exponent(d).positive                    # lambda below 0.05
    assert local_exponent(d, lambda_min=0.01).positive
    fixed = local_exponent(planted(0.5, 40), window=(10, 30))
    assert (fixed.start, fixed.stop) == (10, 30) and fixed.exponent == pytest.approx(0.5)
    with pytest.raises(ValueError, match="window"):
        local_exponent(d, window=(30, 10))


def test_diverged_copies_are_left_out_and_counted():
    d = planted(0.5, 30)
    d[1, 40:] = np.nan     # a copy that diverged
    d[2] = 0.0             # a copy that was never perturbed
    fit = local_exponent(d)
    assert fit.n_copies == 3 and fit.exponent == pytest.approx(0.5)
    empty = local_exponent(np.full((2, 50), np.nan))
    assert np.isnan(empty.exponent) and empty.n_copies == 0 and not empty.positive


def test_network_exponent_mean_std_ci_and_p():
    slopes = np.array([0.2, 0.4, 0.6, 0.8, 0.03, -0.1])
    d = np.stack([planted(s, 40, seed=i) for i, s in enumerate(slopes)] + [np.full((5, 121), np.nan)])
    net = network_exponent(d, n_bootstrap=4000)
    fitted = slopes
    assert net.mean == pytest.approx(fitted.mean(), rel=1e-8)
    assert net.std == pytest.approx(fitted.std(ddof=1), rel=1e-8)
    assert net.ci_low < net.mean < net.ci_high
    assert net.p == pytest.approx(100 * 4 / 6)               # 0.03 and -0.1 are not positive
    assert (net.n_fitted, net.n_excluded) == (6, 1)
    counts, edges = net.histogram(bins=5)
    assert counts.sum() == 6 and edges[0] == pytest.approx(-0.1)


def test_saturation_epoch_of_pure_growth_is_the_end():
    y = -18 + 0.3 * np.arange(50.0)
    assert saturation_epoch(y) == 49


def brute_force_knee(y, min_window=3):
    """The hinge fit done the obvious way: one least-squares line fit per candidate knee."""
    t = np.arange(y.size)
    best, best_sse = None, np.inf
    for tau in range(min_window, y.size):
        x = np.minimum(t, tau)
        design = np.stack([np.ones_like(x), x], axis=1).astype(float)
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        sse = ((y - design @ coef) ** 2).sum()
        if sse < best_sse * (1 - 1e-9):
            best, best_sse = tau, sse
    return best


@pytest.mark.parametrize("seed", range(5))
def test_saturation_epoch_agrees_with_one_fit_per_candidate(seed):
    rng = np.random.default_rng(seed)
    tau = int(rng.integers(10, 150))
    y = -8 + rng.uniform(0.1, 1.0) * np.minimum(np.arange(200.0), tau) + 0.5 * rng.standard_normal(200)
    assert saturation_epoch(y) == brute_force_knee(y)


def test_a_quiet_curve_is_settled_after_plateau_epochs_and_not_positive():
    t = np.arange(201)
    late = -8 + 0.002 * t + np.where(t > 60, 0.5 * (t - 60), 0).clip(max=15)  # flat 60 epochs, then rising
    d = np.exp(late)[None, :].repeat(3, axis=0)
    assert settled_epoch(late, 40) == 40 and settled_epoch(late, 40, start=55) == 55
    fit = local_exponent(d)
    assert fit.stop <= 40 and not fit.positive
    # Without the rule the fit sees the late rise; a rise of 0.1 or more within 40 epochs is never quiet.
    assert local_exponent(d, quiet_rise=None).stop > 60
    assert settled_epoch(-8 + 0.003 * t, 40) is None  # risen 0.12 by epoch 40: pure slow growth, never settles


def test_an_expansion_faster_than_the_records_is_flagged_not_measured():
    """Minibatch training with many steps an epoch: the distance jumps by e^9 in 2 epochs and saturates. Whatever
    the fit says, the exponential phase lies between a few records; a slow expansion is not flagged."""
    fast = planted(4.5, 2, epochs=60)[None]   # one initial condition, 5 copies
    fit = local_exponent(fast[0])
    assert fit.unresolved and fit.stop - fit.start < 5
    slow = planted(0.68, 30, epochs=60)[None]
    net = network_exponent(np.concatenate([fast, slow, slow]))
    assert net.n_unresolved == 1
    # Left out of lambda_NMLE and p, as a fit that is not a measurement: only the two resolved ones enter.
    assert net.n_fitted == 2 and net.n_excluded == 0 and net.p == 100.0 and net.n_positive == 2
    # An unresolved fit that reads as positive (a clean jump of e^8 in 4 records) is not counted as positive either.
    jump = planted(2.0, 4, epochs=60)[None]
    assert local_exponent(jump[0]).positive and local_exponent(jump[0]).unresolved
    mixed = network_exponent(np.concatenate([jump, planted(0.0, 30, epochs=60)[None]]))
    assert mixed.n_positive == 0 and mixed.p == 0.0 and mixed.p_interval()[0] == 0.0
    # With every step recorded (full batches) nothing lies between records: a fast expansion is measured.
    assert not local_exponent(jump[0], steps_per_record=1).unresolved
    assert local_exponent(jump[0], steps_per_record=10).unresolved
    full = network_exponent(np.concatenate([jump, planted(0.0, 30, epochs=60)[None]]), steps_per_record=1)
    assert full.n_unresolved == 0 and full.n_positive == 1 and full.p == 50.0
    assert net.mean == pytest.approx(local_exponent(slow[0]).exponent)
    alone = network_exponent(fast)
    assert alone.n_fitted == 0 and np.isnan(alone.p) and np.isnan(alone.mean) and alone.n_unresolved == 1
    assert np.isnan(network_exponent(slow).std)  # one exponent has no spread to report
    assert not local_exponent(planted(0.68, 30)).unresolved
    assert not local_exponent(planted(0.5, 3)).unresolved     # a short rise of 1.5: too small to matter


def test_the_report_says_where_exponents_are_not_measured():
    from chaosgd.experiments.report import edge_of_chaos

    row = {"eta": 1.0, "p_percent": 0.0, "tau_rmst": 2.0, "tau_rmst_ci_low": 1.5, "tau_rmst_ci_high": 2.5,
           "tau_median": 2.0, "tau_horizon": 60, "reached_percent": 100.0, "diverged_fraction": 0.0,
           "stuck_at_chance": 0, "reached_then_stuck": 0, "n_initial": 6, "n_unresolved": 6}
    text = edge_of_chaos([row], 0.8)
    assert "At eta = 1 (6 of 6) the distances rose by a factor of more than e^5 within 5 records" in text
    assert "not measured there" in text
