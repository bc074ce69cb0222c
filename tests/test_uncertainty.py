"""The uncertainty exponent against systems whose basin boundary has a known dimension, and on trained networks."""

import numpy as np
import pytest

from chaosgd.uncertainty import (DIVERGED, NOT_TRAINED, TRAINED, digit_basins, fraction_differing, network_outcomes,
                                 uncertain_initial_conditions, uncertainty_exponent,
                                 uncertainty_from_initial_conditions)

RADII = np.logspace(-10, -3, 8)  # not aligned with any base's powers


@pytest.mark.parametrize("base, phi", [(4, 0.5), (5, 1 - np.log(3) / np.log(5))])
def test_phi_of_a_cantor_basin_boundary(base, phi):
    # The boundary is the Cantor set of all-even digits: d = ln ceil(b/2) / ln b, phi = 1 - d. Self-similar sets
    # give f(eps) a log-periodic ripple around the power law: radii at powers of the base sample it in phase. Pairs
    # straddling a cell's edge add a term in eps (f = A eps^phi + C eps), which pulls the fit down by about 0.01 at
    # these radii: hence the tolerance, and no claim that the interval covers phi.
    radii = float(base) ** -np.arange(5, 13)
    differ, pairs = fraction_differing(lambda x: digit_basins(x, base), radii, pairs=200_000, seed=1)
    fit = uncertainty_exponent(radii, differ, pairs)
    assert fit.resolved, fit.reason
    assert fit.phi == pytest.approx(phi, abs=0.02)
    assert fit.phi_high - fit.phi_low < 0.03


def test_a_ripple_between_powers_of_the_base_is_flagged_not_hidden():
    differ, pairs = fraction_differing(lambda x: digit_basins(x, 5), RADII, pairs=200_000, seed=1)
    assert "not one power law" in uncertainty_exponent(RADII, differ, pairs).reason


def test_a_smooth_boundary_has_phi_one():
    # Two basins split at one point: f(eps) = eps / (1 - 0.1) exactly for x uniform in [0, 1 - 0.1].
    radii = np.logspace(-6, -1, 6)
    differ, pairs = fraction_differing(lambda x: (x > 0.3).astype(int), radii, pairs=100_000, seed=2)
    fit = uncertainty_exponent(radii, differ, pairs)
    assert fit.phi == pytest.approx(1.0, abs=0.03) and fit.phi_low < 1 < fit.phi_high


def test_counts_drawn_from_the_model_give_back_its_exponent_within_the_interval():
    rng = np.random.default_rng(3)
    eps = np.logspace(-8, -2, 7)
    covered = 0
    for _ in range(40):
        fit = uncertainty_exponent(eps, rng.binomial(5000, 0.8 * eps ** 0.3), np.full(7, 5000))
        covered += fit.phi_low < 0.3 < fit.phi_high
    assert covered >= 33  # 95 % intervals: 38 of 40 expected; 33 or fewer has probability < 0.3 %


def test_zero_counts_at_small_radii_still_count():
    fit = uncertainty_exponent([1e-9, 1e-7, 1e-5, 1e-3], [0, 0, 3, 300], [1000] * 4)
    assert fit.resolved and 0.7 < fit.phi < 1.4
    assert fit.fraction_low[0] == 0 and fit.fraction_high[0] > 0


def test_unresolved_cases_say_why():
    assert "no outcome changed" in uncertainty_exponent([1e-6, 1e-4, 1e-2], [0, 0, 0], [10] * 3).reason
    assert "every outcome changed" in uncertainty_exponent([1e-6, 1e-4, 1e-2], [10, 10, 10], [10] * 3).reason
    narrow = uncertainty_exponent([1e-4, 10 ** -3.5, 1e-3], [10, 30, 100], [1000] * 3)
    assert "decades" in narrow.reason and not narrow.resolved
    saturated = uncertainty_exponent(np.logspace(-9, -1, 9), [1, 10, 100, 500, 500, 500, 500, 500, 500], [1000] * 9)
    assert "power law" in saturated.reason


@pytest.mark.parametrize("args, match", [
    (([1e-3, 1e-2], [1, 2], [10, 10]), "3 or more radii"),
    (([1e-3, 1e-2, 0.0], [1, 2, 3], [10] * 3), "radii must be finite and > 0"),
    (([1e-3, 1e-3, 1e-2], [1, 2, 3], [10] * 3), "must not repeat"),
    (([1e-3, 1e-2, 1e-1], [1, 20, 3], [10] * 3), "counts"),
    (([1e-3, 1e-2], [1, 2, 3], [10] * 3), "one value per radius"),
])
def test_bad_counts_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        uncertainty_exponent(*args)


def test_network_outcomes_and_pairs():
    class R:  # the fields network_outcomes reads, for 2 groups of 1 + 2 members over 3 epochs
        train_accuracy = np.array([[[0.3, 0.8, 0.95], [0.3, 0.8, 0.85], [0.3, np.nan, np.nan]],
                                   [[0.3, 0.5, 0.5], [0.3, 0.6, 0.91], [0.3, 0.4, 0.6]]])
        diverged_at = np.array([[-1, -1, 1], [-1, -1, -1]])
        copies_stopped_at = np.array([-1, -1])
        references_stopped_at = np.array([-1, -1])

    outcomes = network_outcomes(R, 0.9, last=1)
    np.testing.assert_array_equal(outcomes, [[TRAINED, NOT_TRAINED, DIVERGED], [NOT_TRAINED, TRAINED, NOT_TRAINED]])
    np.testing.assert_array_equal(uncertain_initial_conditions(outcomes), [True, True])
    R.copies_stopped_at = np.array([2, -1])
    with pytest.raises(ValueError, match="stop_copies"):
        network_outcomes(R, 0.9)


def test_outcomes_average_out_a_period_two_accuracy():
    class R:  # the same orbit, alternating 0.85 / 0.95, ending on either phase: one outcome
        train_accuracy = np.array([[[0.85, 0.95] * 10 + [0.85], [0.95, 0.85] * 10 + [0.95]]])
        diverged_at = np.array([[-1, -1]])
        copies_stopped_at = references_stopped_at = np.array([-1])

    assert not uncertain_initial_conditions(network_outcomes(R, 0.9)).any()
    assert uncertain_initial_conditions(network_outcomes(R, 0.9, last=1)).all()


def test_the_command_counts_the_pairs_of_its_run_folder(tmp_path, capsys):
    import json

    from chaosgd.cli import main
    from chaosgd.experiments.results import summarize

    out = tmp_path / "u"
    assert main(["uncertainty", "iris", "--training.etas", "0.1,1", "--ensemble.initial", "4", "--ensemble.copies",
                 "2", "--training.epochs", "30", "--epsilons", "1e-9", "1e-6", "1e-3", "--executor", "serial",
                 "--quiet", "--out", str(out)]) == 0
    saved = json.loads((out / "uncertainty.json").read_text())
    assert [row["eta"] for row in saved["learning_rates"]] == [0.1, 1.0]
    summary = summarize(out)
    assert summary.config.training.axis == "ensemble.epsilon" and not summary.config.training.stop_copies
    for k, row in enumerate(saved["learning_rates"]):
        assert row["initial_conditions"] == 4
        assert row["uncertain"] == [int(uncertain_initial_conditions(network_outcomes(summary.records(k, j), 0.9))
                                        .sum()) for j in range(3)]
    assert (out / "uncertainty.png").stat().st_size > 0
    assert "eta = 0.1:" in capsys.readouterr().out



def test_weak_fits_are_flagged():
    eps = np.logspace(-11, -3, 5)
    assert "only 1 changed" in uncertainty_exponent(eps, [0, 0, 0, 1, 0], [500] * 5).reason
    assert "< 0" in uncertainty_exponent(eps, [14, 9, 13, 7, 4], [500] * 5).reason
    assert "saturated" in uncertainty_exponent(eps, [500, 500, 500, 500, 499], [500] * 5).reason


def test_the_bootstrap_over_initial_conditions_covers_phi_when_every_radius_shares_them():
    # The most correlated design: initial condition i is uncertain at every radius above its own threshold, drawn
    # so that P(uncertain at eps) = 0.5 eps^0.2. The likelihood's interval would treat the radii as independent.
    eps = np.logspace(-10, -2, 5)
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(30):
        threshold = (rng.uniform(size=200) / 0.5) ** (1 / 0.2)
        fit = uncertainty_from_initial_conditions(eps, threshold[:, None] <= eps, resamples=300, seed=1)
        covered += fit.phi_low < 0.2 < fit.phi_high
    assert covered >= 24  # 95 % intervals: 28.5 of 30 expected; 24 or fewer has probability < 0.3 %
