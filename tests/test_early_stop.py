import jax
import numpy as np
import pytest

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.ensemble import over_learning_rates
from chaosgd.lyapunov import CopiesSettled, network_exponent


@pytest.fixture(scope="module")
def both_runs(blobs):
    model = MLP((6, 16, 3))
    ball = epsilon_ball(initial_conditions(model, 4), 3)
    params, eta, ic = over_learning_rates(ball, [0.05, 10.0])
    objective = classification(model)
    full = run(objective, params, eta, blobs.arrays(), epochs=150, initial_condition=ic)
    early = run(objective, params, eta, blobs.arrays(), epochs=150, initial_condition=ic,
                stop_copies=CopiesSettled(40))
    return eta, full, early


def test_copies_stop_once_the_fit_is_settled_and_work_is_saved(both_runs):
    eta, full, early = both_runs
    chaotic = eta == 10.0
    assert np.all(full.copies_stopped_at == -1)
    assert np.all((early.copies_stopped_at[chaotic] >= 40) & (early.copies_stopped_at[chaotic] < 150))
    # At the calm rate the distances do not grow: quiet curves stop at epoch 40, where the first check falls.
    assert np.all(early.copies_stopped_at[~chaotic] == 40)
    assert early.network_epochs < 0.75 * early.naive_network_epochs == 0.75 * full.network_epochs
    np.testing.assert_array_equal(full.copies_computed_epochs, 150)
    stopped = early.copies_stopped_at >= 0
    assert np.all(early.copies_computed_epochs[stopped] >= early.copies_stopped_at[stopped] + 1)
    assert np.all(early.copies_computed_epochs[~stopped] == 150)
    for g, stop in enumerate(early.copies_stopped_at):
        if stop >= 0:
            assert np.all(np.isnan(early.distance[g, :, stop + 1:])) and np.all(np.isnan(early.loss[g, 1:, stop + 1:]))
            assert np.all(np.isfinite(early.distance[g, :, :stop + 1]))
    # References always run to the end.
    assert np.all(np.isfinite(early.loss[:, 0])) and np.all(np.isfinite(early.test_accuracy))


def test_stopping_changes_no_exponent_and_no_reference_record(both_runs):
    eta, full, early = both_runs
    first_stop = early.copies_stopped_at[early.copies_stopped_at >= 0].min()
    # Until the first stop the batches are the same, so the records are identical.
    np.testing.assert_array_equal(early.loss[:, :, :first_stop + 1], full.loss[:, :, :first_stop + 1])
    for value in (0.05, 10.0):
        sel = eta == value
        a = network_exponent(full.distance[sel])
        b = network_exponent(early.distance[sel], stopped_at=early.copies_stopped_at[sel])
        np.testing.assert_allclose(b.exponents, a.exponents, rtol=1e-6)
        assert [f.stop for f in a.local] == [f.stop for f in b.local] and a.p == b.p
    # Later, roundoff differs (a stopped group's reference joins another batch); outside chaos it stays roundoff.
    calm = eta == 0.05
    np.testing.assert_allclose(early.loss[calm, 0], full.loss[calm, 0], rtol=1e-10)


@pytest.mark.parametrize("copies", [3, 0])
def test_references_stop_once_the_target_is_reached_without_changing_the_time_to_it(blobs, copies):
    from chaosgd.training_time import time_to_accuracy

    model = MLP((6, 16, 3))
    centres = initial_conditions(model, 6)
    ball = epsilon_ball(centres, copies) if copies else jax.tree_util.tree_map(lambda x: x[:, None], centres)
    params, eta, ic = over_learning_rates(ball, [0.2, 0.5])  # calm rates at which the blobs are learnt
    objective = classification(model)
    full = run(objective, params, eta, blobs.arrays(), epochs=150, initial_condition=ic)
    early = run(objective, params, eta, blobs.arrays(), epochs=150, initial_condition=ic,
                stop_copies=CopiesSettled(40), stop_references_at=0.8)
    reached = (full.test_accuracy >= 0.8).any(axis=1)
    # A reference stops once it reached the target and its copies stopped (or it has none).
    expected = reached & ((early.copies_stopped_at >= 0) | (copies == 0))
    assert expected.any() and np.all((early.references_stopped_at >= 0) == expected)
    a, b = time_to_accuracy(full.test_accuracy, 0.8), time_to_accuracy(early.test_accuracy, 0.8)
    np.testing.assert_array_equal(a.epoch, b.epoch)  # the first epoch at the target is the same
    for g in np.flatnonzero(expected):
        stop = early.references_stopped_at[g]
        assert np.all(np.isnan(early.loss[g, 0, stop + 1:])) and np.all(np.isfinite(early.loss[g, 0, :stop + 1]))
        assert early.references_computed_epochs[g] >= stop + 1  # it may run on until half its batch is done
    assert np.all(early.references_computed_epochs[~expected] == 150)
    assert (early.references_computed_epochs[expected] < 150).any()
    assert early.network_epochs < full.network_epochs


class EveryTenth:
    """A stopping rule other than the paper's: copies may stop at every check from epoch 10 on."""

    first_check = 10

    def __call__(self, distance, checked):
        return np.full(len(distance), distance.shape[-1] - 1 >= 10)


def test_references_stop_in_a_run_shorter_than_one_segment(blobs):
    # 7 epochs, less than one segment: the references that reached the target are stopped after it, as in longer runs.
    model = MLP((6, 8, 3))
    params = epsilon_ball(initial_conditions(model, 3), 0)
    rec = run(classification(model), params, np.array([0.5, 4.0, 40.0]), blobs.arrays(), epochs=7,
              stop_references_at=0.3)
    done = (rec.test_accuracy[:, :7] >= 0.3).any(axis=1) | (rec.diverged_at[:, 0] >= 0)
    assert done.any()
    np.testing.assert_array_equal(rec.references_stopped_at, np.where(done, 6, -1))
    assert np.all(np.isnan(rec.test_accuracy[done, 7])) and not np.any(np.isnan(rec.test_accuracy[~done, 7]))


def test_the_engine_takes_any_stopping_rule(blobs):
    model = MLP((6, 8, 3))
    params = epsilon_ball(initial_conditions(model, 3), 2)
    rec = run(classification(model), params, 1.0, blobs.arrays(), epochs=60, stop_copies=EveryTenth())
    np.testing.assert_array_equal(rec.copies_stopped_at, 10)  # the first scan runs to the rule's first check
    assert np.all(np.isnan(rec.distance[:, :, 11:])) and np.all(np.isfinite(rec.distance[:, :, :11]))


@pytest.mark.parametrize("rule", [40, "settled", CopiesSettled])
def test_a_stopping_rule_that_is_not_one_is_refused(blobs, rule):
    model = MLP((6, 8, 3))
    with pytest.raises(ValueError, match="StopRule"):
        run(classification(model), epsilon_ball(initial_conditions(model, 2), 1), 1.0, blobs.arrays(), epochs=5,
            stop_copies=rule)


@pytest.mark.parametrize("plateau", [0, -1, 2.5, True])
def test_copies_settled_refuses_a_plateau_that_is_no_number_of_epochs(plateau):
    with pytest.raises(ValueError, match="plateau"):
        CopiesSettled(plateau)
