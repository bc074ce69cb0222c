"""Times to target as censored survival data: first passage, held targets, Kaplan-Meier median, restricted mean
and the fraction reached, against hand computations, closed forms and lifelines."""

import math

import numpy as np
import pytest

from chaosgd.training_time import survival, time_to_accuracy


def test_first_passage_and_censoring():
    acc = np.array([[0.1, 0.5, 0.91, 0.80, 0.95],    # reaches 0.9 at epoch 2 (then dips: still 2)
                    [0.1, 0.2, 0.30, 0.40, 0.50],    # never: censored
                    [0.9, 0.9, 0.90, 0.90, 0.90],    # at epoch 0; >= counts
                    [0.1, np.nan, np.nan, np.nan, np.nan]])  # diverged: censored, NaN never reaches
    tt = time_to_accuracy(acc, 0.9)
    np.testing.assert_array_equal(tt.censored, [False, True, False, True])
    np.testing.assert_array_equal(tt.epoch[[0, 2]], [2, 0])
    assert np.isnan(tt.epoch[1]) and tt.n_censored == 2 and tt.budget == 4 and tt.horizon == 4
    assert tt.mean() == 1.0  # the paper's <tau>, over the two that reached it
    s = tt.survival()
    # Kaplan-Meier with censoring only at the budget is the empirical distribution: S = 3/4 from epoch 0, 1/2 from 2.
    np.testing.assert_allclose(s.survival[:2], [0.75, 0.5])
    assert s.median == 2 and s.rmst == pytest.approx((0 + 2 + 4 + 4) / 4) and s.n_reached == 2
    assert tt.describe() == "2/4 reached 90%; median 2, restricted mean 2.5 [0.9, 4.0] epochs"  # ± 1.96 sqrt(2.75 / 4)


def test_a_held_target_needs_consecutive_epochs_within_the_budget():
    acc = np.array([[0.1, 0.95, 0.5, 0.95, 0.95, 0.95]])  # touches 0.9 at 1, holds it from 3 to the end (5)
    assert time_to_accuracy(acc, 0.9).epoch[0] == 1
    assert time_to_accuracy(acc, 0.9, hold=2).epoch[0] == 3
    assert time_to_accuracy(acc, 0.9, hold=3).epoch[0] == 3
    held4 = time_to_accuracy(acc, 0.9, hold=4)
    # a stretch of 4 would have to start by epoch 2; censored there: the horizon is T - hold + 1
    assert held4.censored[0] and held4.horizon == 2 and held4.survival().rmst == 2
    assert "held 4 epochs" in held4.describe()
    with pytest.raises(ValueError, match=r"hold must be an integer in \[1, 6\]"):
        time_to_accuracy(acc, 0.9, hold=7)
    with pytest.raises(ValueError, match=r"every time must lie in \[0, horizon = 5\]"):
        survival([-1, 2], [5], horizon=5)


def test_kaplan_meier_median_and_restricted_mean_by_hand():
    # events at 1, 2, 2, 3, 5; censored after 3, 6, 6 (8 networks, horizon 6). At risk 8, 7, 5, 3 at the events:
    # S = 7/8, 7/8 * 5/7 = 5/8, 5/8 * 4/5 = 1/2, 1/2 * 2/3 = 1/3.
    s = survival([1, 2, 2, 3, 5], [3, 6, 6], horizon=6)
    np.testing.assert_allclose(s.survival[:4], [7 / 8, 5 / 8, 1 / 2, 1 / 3])
    assert s.median == 3  # the first epoch with S <= 1/2
    areas = [1, 7 / 8, 5 / 8, 2 * (1 / 2), 1 / 3]  # S over [0,1), [1,2), [2,3), [3,5), [5,6)
    assert s.rmst == pytest.approx(sum(areas))
    # Klein & Moeschberger's variance: sum over event times of A_i^2 d_i / (Y_i (Y_i - d_i)), A_i = area after t_i
    after = [sum(areas[k:]) for k in (1, 2, 3, 4)]
    var = sum(a * a * d / (y * (y - d)) for a, d, y in zip(after, [1, 2, 1, 1], [8, 7, 5, 3]))
    assert s.rmst_high - s.rmst == pytest.approx(1.959964 * math.sqrt(var), rel=1e-6)


def test_uncensored_times_give_the_sample_mean_and_its_plug_in_variance():
    x = np.array([3, 7, 7, 12, 20, 31, 33, 40], dtype=float)
    s = survival(x, [], horizon=50)
    assert s.rmst == pytest.approx(x.mean())
    assert s.rmst_high - s.rmst == pytest.approx(1.959964 * math.sqrt(x.var() / x.size), rel=1e-6)
    assert s.n_reached == 8 and s.reached_high == 1


def test_agrees_with_lifelines_on_planted_censored_data():
    # Planted data; lifelines 0.30.3 (KaplanMeierFitter, median_survival_times of its confidence_interval_ and
    # restricted_mean_survival_time at t = 60) gives median 37 with CI [23, 41] and RMST 34.04781.
    events = [1, 1, 4, 6, 7, 12, 12, 13, 15, 15, 16, 20, 21, 22, 23, 25, 26, 27, 32, 37, 37, 39, 40, 41, 41, 41, 43,
              43, 47, 47]
    censored = [11, 12, 16, 26, 27, 29, 54, 58, 60, 60, 60, 60, 60, 60]
    s = survival(events, censored, horizon=60)
    assert (s.median, s.median_low, s.median_high) == (37, 23, 41)
    assert s.rmst == pytest.approx(34.04781, abs=1e-5)


def test_nobody_reaching_the_target_is_a_median_beyond_the_budget_and_the_whole_budget_as_mean():
    tt = time_to_accuracy(np.zeros((10, 31)), 0.5)
    s = tt.survival()
    assert math.isinf(s.median) and math.isinf(s.median_high) and s.rmst == 30
    assert math.isnan(s.rmst_low) and math.isnan(s.rmst_high)  # no spread: undefined, not a width of 0
    assert s.n_reached == 0 and s.reached_low == 0
    assert s.reached_high == pytest.approx(0.2775, abs=1e-4)  # the Wilson 95 % upper bound for 0 of 10
    assert np.isnan(tt.mean()) and "never reached" in tt.describe()


@pytest.mark.parametrize("target", [0.0, 1.5, -0.2])
def test_target_outside_unit_interval_is_refused(target):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        time_to_accuracy(np.zeros((1, 3)), target)


def test_records_within_epochs_give_passage_times_in_fractions_of_an_epoch():
    """Three records an epoch over T = 2 epochs (7 records): the first passage at record 4 is epoch 4/3; held for 2
    epochs it needs records 4 .. 7, past the budget, so it is censored, as the passage held from record 1 is not."""
    acc = np.array([[0.1, 0.2, 0.5, 0.6, 0.95, 0.9, 0.97],
                    [0.1, 0.95, 0.96, 0.97, 0.92, 0.91, 0.8]])
    first = time_to_accuracy(acc, 0.9, records_per_epoch=3)
    np.testing.assert_allclose(first.epoch, [4 / 3, 1 / 3])
    assert first.budget == 2 and first.horizon == 2
    held = time_to_accuracy(acc, 0.9, hold=2, records_per_epoch=3)
    assert list(held.censored) == [True, False] and held.epoch[1] == pytest.approx(1 / 3)
    assert held.horizon == 1
    with pytest.raises(ValueError, match="divides"):
        time_to_accuracy(acc, 0.9, records_per_epoch=4)
