"""The uncertainty exponent against systems whose basin boundary has a known dimension, and on trained networks."""

import numpy as np
import pytest

from chaosgd.uncertainty import (DIVERGED, LOSS_DIVERGED, NOT_TRAINED, TRAINED, digit_basins, fraction_differing,
                                 network_outcomes, uncertain_initial_conditions, uncertainty_exponent,
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
    # The default is the outcome of before issue 26, counted and described as then.
    assert saved["outcome"] == "diverged | mean training accuracy over the last 20 records >= 0.9 | below it"
    for k, row in enumerate(saved["learning_rates"]):
        assert row["uncertain"] == [int(uncertain_initial_conditions(_class_outcomes_before_issue_26(
            summary.records(k, j), 0.9)).sum()) for j in range(3)]

    # The loss outcome analyses the same finished folder again (nothing is trained) into its own files.
    before = (out / "uncertainty.json").read_bytes()
    assert main(["uncertainty", "iris", "--training.etas", "0.1,1", "--ensemble.initial", "4", "--ensemble.copies",
                 "2", "--training.epochs", "30", "--epsilons", "1e-9", "1e-6", "1e-3", "--executor", "serial",
                 "--quiet", "--out", str(out), "--outcome", "loss", "--loss-bin", "0.5"]) == 0
    shown = capsys.readouterr().out
    assert "this call computed 0" in shown and "0.5 decades wide" in shown
    assert (out / "uncertainty.json").read_bytes() == before
    by_loss = json.loads((out / "uncertainty-loss.json").read_text())
    assert by_loss["outcome_name"] == "loss" and by_loss["loss_bin_decades"] == 0.5
    assert "0.5 decades" in by_loss["outcome"]
    for k, row in enumerate(by_loss["learning_rates"]):
        outcomes = [network_outcomes(summary.records(k, j), outcome="loss", bin_decades=0.5) for j in range(3)]
        assert row["uncertain"] == [int(uncertain_initial_conditions(o).sum()) for o in outcomes]
    assert (out / "uncertainty-loss.png").stat().st_size > 0


@pytest.mark.parametrize("extra, match", [
    (["--outcome", "labels"], "--outcome: one of class, loss"),
    (["--outcome", "loss", "--loss-bin", "0"], "--loss-bin: a width in decades"),
    (["--outcome", "loss", "--loss-bin", "nan"], "--loss-bin: a width in decades"),
    (["--loss-bin", "0.5"], "--outcome class has none"),
    (["--training.axis_values", "[1e-9]"], "training.axis_values: chaosgd uncertainty sets training.axis and"),
    (["--set", "training.axis=model.sigma"], "training.axis: chaosgd uncertainty sets training.axis and"),
])
def test_the_command_refuses_a_bad_outcome_before_training(tmp_path, capsys, extra, match):
    from chaosgd.cli import main

    out = tmp_path / "u"
    assert main(["uncertainty", "iris", "--executor", "serial", "--quiet", "--out", str(out), *extra]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()



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


def _class_outcomes_before_issue_26(records, target, last=20):
    """network_outcomes as it was before the loss outcome existed: the default must give exactly this."""
    final = np.mean(records.train_accuracy[:, :, -last:], axis=-1)
    outcome = np.where(final >= target, TRAINED, NOT_TRAINED)
    return np.where((records.diverged_at >= 0) | ~np.isfinite(final), DIVERGED, outcome)


def _records(loss, accuracy=None, diverged_at=None):
    """The fields network_outcomes reads, for losses (G, 1 + M, T + 1)."""
    loss = np.asarray(loss, dtype=float)

    class R:
        pass

    R.loss = loss
    R.train_accuracy = np.full(loss.shape, 1 / 3) if accuracy is None else np.asarray(accuracy, dtype=float)
    R.diverged_at = np.full(loss.shape[:2], -1) if diverged_at is None else np.asarray(diverged_at)
    R.copies_stopped_at = R.references_stopped_at = np.full(loss.shape[0], -1)
    return R


def test_the_default_outcome_is_the_one_of_before_exactly():
    rng = np.random.default_rng(5)
    accuracy = rng.choice([0.3, 0.85, 0.9, 0.95, 1.0], size=(40, 4, 25))  # means on and around the target
    accuracy[rng.uniform(size=accuracy.shape) < 0.02] = np.nan
    diverged_at = np.where(rng.uniform(size=(40, 4)) < 0.1, 7, -1)
    records = _records(rng.uniform(0.1, 2, size=(40, 4, 25)), accuracy, diverged_at)
    for last in (1, 20):
        expected = _class_outcomes_before_issue_26(records, 0.9, last)
        np.testing.assert_array_equal(network_outcomes(records, 0.9, last=last), expected)
        np.testing.assert_array_equal(network_outcomes(records, 0.9, outcome="class", last=last), expected)
    assert len(np.unique(expected)) == 3


def test_the_loss_outcome_bins_the_mean_final_loss_in_decades():
    # One group of a reference and five copies, all at chance accuracy (one class outcome), 21 records: the last 20
    # are averaged. Bins of 0.5 decades, edges at 10^(k / 2).
    final = [0.05, 0.2, np.log(3), 0.0]  # log10 / 0.5 = -2.6, -1.4, 0.08, lowest float64 bin
    loss = np.repeat(np.array(final + [0.3, 0.3])[None, :, None], 21, axis=2)
    loss[0, 4, 1::2], loss[0, 4, 2::2] = 0.5, 0.1  # a period-2 orbit: its mean 0.3 and never its phase counts
    loss[0, 5, 0] = 1e6  # the first record is not among the last 20
    diverged_at = np.array([[-1, -1, -1, -1, -1, -1]])
    records = _records(loss, diverged_at=diverged_at)
    lowest = int(np.floor(np.log10(np.finfo(float).tiny) / 0.5))
    np.testing.assert_array_equal(network_outcomes(records, outcome="loss", bin_decades=0.5),
                                  [[-3, -2, 0, lowest, -2, -2]])
    np.testing.assert_array_equal(network_outcomes(records, 0.9), [[NOT_TRAINED] * 6])
    assert uncertain_initial_conditions(network_outcomes(records, outcome="loss", bin_decades=0.5)).all()
    assert not uncertain_initial_conditions(network_outcomes(records, 0.9)).any()
    # The default width is 0.1 decades; a member that diverged has an outcome of its own, that no loss reaches.
    records.diverged_at = np.array([[-1, 15, -1, -1, -1, -1]])
    records.loss[0, 1, 15:] = np.nan
    np.testing.assert_array_equal(network_outcomes(records, outcome="loss")[0, :3],
                                  [-14, LOSS_DIVERGED, 0])
    records.loss[0, 1] = 1e300  # diverged_at alone decides, as for the class outcome
    assert network_outcomes(records, outcome="loss")[0, 1] == LOSS_DIVERGED


def test_the_loss_outcome_of_a_smooth_final_loss_has_phi_one_where_the_class_outcome_never_changes():
    # Initial condition x, copies at x + eps u (u uniform in [-1, 1], the same directions at every radius), final
    # loss exp(x): the bins' edges are isolated points in x, a smooth boundary, so f(eps) ~ eps and phi = 1. Every
    # network is at chance accuracy, so the three-way outcome does not change at any radius.
    rng = np.random.default_rng(6)
    radii = np.logspace(-5, -2, 4)  # f(eps) ~ 7 eps for 0.1-decade bins, 0.23 apart in x
    x, u = rng.uniform(-5, 2, size=(10_000, 1)), rng.uniform(-1, 1, size=(10_000, 5))
    uncertain, unchanged = [], []
    for eps in radii:
        members = np.concatenate([x, x + eps * u], axis=1)
        records = _records(np.repeat(np.exp(members)[..., None], 21, axis=2))
        uncertain.append(uncertain_initial_conditions(network_outcomes(records, outcome="loss")))
        unchanged.append(uncertain_initial_conditions(network_outcomes(records, 0.9)))
    fit = uncertainty_from_initial_conditions(radii, np.stack(uncertain, axis=1), resamples=300)
    assert fit.resolved, fit.reason
    assert fit.phi == pytest.approx(1.0, abs=0.1) and fit.phi_low < 1 < fit.phi_high
    assert not np.any(unchanged)
    # A final loss that forgets x below 1e-6 (a fractal-like, fully sensitive dependence) changes at every radius.
    chaotic = [uncertain_initial_conditions(network_outcomes(_records(np.repeat(
        10 ** rng.uniform(-2, 0, size=(4000, 6, 1)), 21, axis=2)), outcome="loss")) for _ in radii]
    assert np.mean(chaotic) > 0.9


@pytest.mark.parametrize("kwargs, match", [
    ({"outcome": "labels", "target": 0.9}, "outcome must be one of 'class', 'loss'"),
    ({"outcome": "class"}, "needs a target"),
    ({"outcome": "class", "target": 0.9, "bin_decades": 0.1}, "has none"),
    ({"outcome": "loss", "target": 0.9}, "no target"),
    ({"outcome": "loss", "bin_decades": 0.0}, "bin_decades must be finite and >= 1e-12"),
    ({"outcome": "loss", "bin_decades": -0.1}, "bin_decades must be finite"),
    ({"outcome": "loss", "bin_decades": np.inf}, "bin_decades must be finite"),
    ({"outcome": "loss", "bin_decades": 1e-13}, "bin_decades must be finite"),
    ({"outcome": "loss", "last": 0}, "last must be an integer >= 1"),
    ({"outcome": "loss", "last": 21}, "train for more epochs"),
])
def test_a_bad_outcome_is_refused(kwargs, match):
    records = _records(np.full((2, 3, 21), 0.5))
    with pytest.raises(ValueError, match=match):
        network_outcomes(records, **kwargs)


def test_a_negative_loss_has_no_log_scale_bin():
    with pytest.raises(ValueError, match="losses >= 0"):
        network_outcomes(_records(np.full((1, 2, 21), -0.5)), outcome="loss")
