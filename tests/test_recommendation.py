"""The learning-rate recommendation (chaosgd.sweetspot) on constructed evaluations: where networks train, where
they are stuck or diverge, where p never develops or develops only where nothing trains; and its progress measure."""

import json
import math

import numpy as np
import pytest

from chaosgd.evaluation import Evaluation, mean_interval, progress_scores
from chaosgd.sweetspot import find_sweet_spot


def world(progress, p=lambda eta: 0.0, stuck=lambda eta: 0.0, diverged=lambda eta: 0.0, unresolved=lambda eta: 0,
          n=20, calls=None):
    """An evaluate(eta) whose every number is a function of log eta, with a fixed +-0.03 progress interval."""
    def evaluate(eta):
        if calls is not None:
            calls.append(eta)
        value, pp = progress(eta), p(eta)
        return Evaluation(eta, pp, max(0.0, pp - 15), min(100.0, pp + 15), n, pp / 100, diverged(eta), 100,
                          n_unresolved=unresolved(eta), progress=value, progress_low=value - 0.03,
                          progress_high=value + 0.03, stuck_fraction=stuck(eta), epochs=30, n_networks=n)
    return evaluate


def bump(peak, width=1.0, height=0.9):
    """Progress highest at ``peak``, falling quadratically in log10(eta)."""
    return lambda eta: max(0.0, height - 0.3 * (math.log10(eta / peak) / width) ** 2)


def step(at, low=0.0, high=100.0):
    return lambda eta: high if eta >= at else low


def test_the_fastest_within_the_resolution_and_the_edge_rule_takes_the_largest_as_fast_below_the_onset():
    calls = []
    spot = find_sweet_spot(world(bump(0.3), p=step(2.0), calls=calls), eta_min=0.01, eta_max=20)
    assert 0.3 / 10 ** 0.25 <= spot.fastest <= 0.3 * 10 ** 0.25 and spot.rule == "edge" and spot.eta == spot.edge
    assert spot.low <= spot.fastest <= spot.eta <= spot.high
    assert spot.onset is not None and spot.onset.low < 2.0 <= spot.onset.high and spot.p_high_reached
    assert spot.onset.high / spot.onset.low <= 10 ** 0.25 + 1e-9
    assert "below the onset" in spot.reason and len(calls) == len(set(calls)) <= 12
    # Every learning rate whose progress interval reaches the best's is in the interval, and only those; the edge
    # rule takes the largest of them not above the onset.
    best = spot.at(spot.fastest)
    peers = [e.eta for e in spot.evaluations if e.trainable and e.progress_high >= best.progress_low]
    assert (spot.low, spot.high) == (min(peers), max(peers))
    tied = [e.eta for e in spot.evaluations if e.trainable and e.progress_high >= best.progress]
    assert spot.edge == max(eta for eta in tied if eta <= spot.onset.eta)
    fastest = find_sweet_spot(world(bump(0.3), p=step(2.0)), eta_min=0.01, eta_max=20, rule="fastest")
    assert fastest.eta == fastest.fastest == spot.fastest and fastest.evaluations == spot.evaluations
    with pytest.raises(ValueError, match="rule must be one of edge, fastest"):
        find_sweet_spot(world(bump(0.3)), eta_min=0.01, eta_max=20, rule="steepest")


@pytest.mark.parametrize("failure", ["stuck", "diverged"])
def test_never_where_most_networks_fail_even_if_their_numbers_look_fast(failure):
    """Progress rising up to eta = 10, but from eta = 1 on most networks fail: the recommendation stays below 1 and
    the reason names the edge."""
    fails = lambda eta: 0.8 if eta >= 1 else 0.0  # noqa: E731
    spot = find_sweet_spot(world(lambda eta: min(0.95, 0.5 + 0.2 * math.log10(eta / 0.01)), **{failure: fails}),
                           eta_min=0.01, eta_max=20)
    assert spot.eta < 1 and spot.high < 1 and spot.at(spot.eta).trainable
    assert "networks stop learning" in spot.reason
    assert ("16 of 20 end at chance accuracy" if failure == "stuck" else "16 of 20 diverge") in spot.reason


def test_p_never_high_the_recommendation_stands_and_the_reason_says_so():
    spot = find_sweet_spot(world(bump(0.1), p=lambda eta: 70.0 if eta > 0.5 else 10.0), eta_min=0.01, eta_max=20)
    assert spot.onset is None and not spot.p_high_reached and math.isfinite(spot.eta)
    assert "p never reaches 95%" in spot.reason and "at most 70%" in spot.reason


def test_p_high_only_where_nothing_trains():
    """Chaos develops only where networks are stuck: the onset is reported, the recommendation is below it."""
    spot = find_sweet_spot(world(bump(0.5), p=step(3.0), stuck=lambda eta: 1.0 if eta >= 3.0 else 0.0),
                           eta_min=0.01, eta_max=20)
    assert spot.eta < 3.0 and spot.at(spot.eta).trainable
    assert "networks stop learning" in spot.reason


def test_nothing_trains_gives_nan_and_a_reason_never_none():
    spot = find_sweet_spot(world(lambda eta: 0.3, stuck=lambda eta: 1.0), eta_min=0.1, eta_max=10)
    assert math.isnan(spot.eta) and math.isnan(spot.low) and math.isnan(spot.high)
    assert spot.reason.startswith("No learning rate evaluated") and "end at chance accuracy" in spot.reason
    assert min(e.eta for e in spot.evaluations) == pytest.approx(0.1 / 100)  # it looked two decades lower too
    text = json.dumps(spot.to_dict())  # plain data, NaN included
    assert json.loads(text)["eta"] != json.loads(text)["eta"]


def test_the_scan_widens_where_the_best_lies_at_an_end():
    spot = find_sweet_spot(world(bump(50.0), p=step(500.0)), eta_min=0.01, eta_max=1.0)
    assert 50 / 10 ** 0.25 <= spot.fastest <= 50 * 10 ** 0.25
    low = find_sweet_spot(world(bump(0.002), p=step(1.0)), eta_min=0.1, eta_max=10.0)
    assert 0.002 / 10 ** 0.25 <= low.fastest <= 0.002 * 10 ** 0.25


def test_unresolved_exponents_leave_the_onset_open_and_the_reason_says_so():
    spot = find_sweet_spot(world(bump(0.3), p=lambda eta: 100.0 if eta >= 2 else 0.0,
                                 unresolved=lambda eta: 15 if eta >= 2 else 0), eta_min=0.01, eta_max=20)
    assert spot.onset is not None and spot.onset.diverging_edge and not spot.p_high_reached
    assert "too fast for the records" in spot.reason and math.isfinite(spot.eta)


def test_evaluations_without_progress_are_refused():
    evaluate = lambda eta: Evaluation(eta, 0.0, 0, 10, 6, 0.0, 0.0, 10)  # noqa: E731  (progress not measured)
    with pytest.raises(ValueError, match="target"):
        find_sweet_spot(evaluate, eta_min=0.1, eta_max=10)


def test_progress_counts_epochs_at_the_target_fully_and_half_the_accuracy_before_and_its_t_interval():
    accuracy = np.array([[0.1, 0.5, 0.9, 0.8], [0.1, np.nan, np.nan, np.nan], [0.2, 0.45, 0.45, 0.6]])
    scores = progress_scores(accuracy, 0.9)
    # Reached at t = 2 and held as reached (first passage) although it falls back; diverged after t = 0; never.
    assert scores == pytest.approx([(0.5 * (0.1 + 0.5) / 0.9 + 2) / 4, 0.5 * 0.1 / 0.9 / 4,
                                    0.5 * (0.2 + 0.45 + 0.45 + 0.6) / 0.9 / 4])
    # One minus the restricted mean time to target over the budget, up to the constant 1 - PRE, where all reach it:
    times = np.array([1, 2, 3])
    steps = np.array([[0.0] * t + [0.95] * (5 - t) for t in times])
    assert 1 - progress_scores(steps, 0.9) == pytest.approx(times / 5)
    mean, low, high = mean_interval(scores, 0.95)
    half = 4.302653 * np.std(scores, ddof=1) / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert mean == pytest.approx(scores.mean()) and low == pytest.approx(max(0, mean - half), rel=1e-6)
    assert high == pytest.approx(min(1, mean + half), rel=1e-6)
    assert mean_interval(scores[:1]) == (scores[0], 0.0, 1.0)


@pytest.mark.parametrize("records_per_epoch", [1, 2])
def test_progress_with_a_held_target_starts_where_time_to_accuracy_puts_the_passage(records_per_epoch):
    from chaosgd.training_time import time_to_accuracy

    rng = np.random.default_rng(3)
    accuracy = rng.uniform(0.7, 1.0, (40, 4 * records_per_epoch + 1))  # some pass early, fall back, pass again
    accuracy[3, 2:] = np.nan  # diverged
    for hold in (1, 2, 3):
        scores = progress_scores(accuracy, 0.9, hold=hold, records_per_epoch=records_per_epoch)
        passage = time_to_accuracy(accuracy, 0.9, hold=hold, records_per_epoch=records_per_epoch)
        start = np.where(passage.censored, accuracy.shape[1], np.round(passage.epoch * records_per_epoch)).astype(int)
        before = 0.5 * np.minimum(np.nan_to_num(accuracy, nan=0.0), 0.9) / 0.9
        expected = [(before[i, :s].sum() + accuracy.shape[1] - s) / accuracy.shape[1] for i, s in enumerate(start)]
        assert scores == pytest.approx(expected)
    assert not np.array_equal(progress_scores(accuracy, 0.9, hold=2, records_per_epoch=records_per_epoch),
                              progress_scores(accuracy, 0.9, records_per_epoch=records_per_epoch))
    for bad in ({"hold": 0}, {"hold": 1.5}, {"records_per_epoch": 0}, {"hold": 6}):
        with pytest.raises(ValueError, match="hold|records_per_epoch"):
            progress_scores(accuracy, 0.9, **{"records_per_epoch": records_per_epoch, **bad})


def test_the_same_seed_gives_the_same_recommendation(blobs):
    import chaosgd
    from chaosgd.models import MLP

    data = blobs.arrays()
    a, b = (chaosgd.sweet_spot(MLP((6, 16, 3)), data, eta_min=0.1, eta_max=30.0, epochs=30, target=0.8)
            for _ in range(2))
    assert a == b and np.isfinite(a.eta) and all(e.n_networks == 4 for e in a.evaluations)


def test_the_scan_lands_on_a_stored_learning_rate_not_a_roundoff_away():
    """0.01 * sqrt(10)**4 is 1.0000000000000002: the scan must take a sweep's stored 1.0 for it, not evaluate a
    second point a roundoff apart (which read as an onset between 1 and 1)."""
    calls = []
    evaluate = world(bump(0.3), p=step(2.0), calls=calls)
    known = {1.0: evaluate(1.0), 0.1: evaluate(0.1)}
    calls.clear()
    spot = find_sweet_spot(evaluate, eta_min=0.01, eta_max=20, known=known)
    assert 1.0 not in calls and 0.1 not in calls
    etas = sorted(e.eta for e in spot.evaluations)
    assert all(b / a > 1.01 for a, b in zip(etas, etas[1:]))
