"""Progress of ``engine.run``: updated every epoch, summing to the naive work, without changing a record."""

import jax
import numpy as np
import pytest

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.ensemble import over_learning_rates
from chaosgd.lyapunov import CopiesSettled

FIELDS = ("loss", "train_accuracy", "test_accuracy", "distance", "diverged_at", "copies_stopped_at",
          "copies_computed_epochs", "references_stopped_at", "references_computed_epochs")


def assert_same_records(a, b):
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_progress_moves_every_epoch_before_the_first_scan_ends(blobs):
    model = MLP((6, 8, 3))
    params = epsilon_ball(initial_conditions(model, 3), 2)
    objective = classification(model)
    calls = []
    rule = CopiesSettled(40)
    seen_at_first_check = []

    def watched(distance, checked):  # the engine asks the rule right after the first scan
        if not seen_at_first_check:
            seen_at_first_check.append(len(calls))
        return rule(distance, checked)

    watched.first_check = rule.first_check
    with_progress = run(objective, params, 1.0, blobs.arrays(), epochs=60, stop_copies=watched,
                        progress=calls.append)
    # The first scan runs epochs 0 .. 40: one report per epoch, all in before it returned.
    assert seen_at_first_check == [41]
    assert calls[:41] == [3 * 3] * 41
    assert sum(calls) == 3 * 3 * 60
    silent = run(objective, params, 1.0, blobs.arrays(), epochs=60, stop_copies=rule)
    assert_same_records(with_progress, silent)


@pytest.mark.parametrize("copies", [3, 0])
def test_progress_sums_to_the_naive_work_when_copies_and_references_stop(blobs, copies):
    # One group learns and stops early, the others never reach the target: stopped references stay in their batch
    # (less than half of it is done), and must not be counted again while they ride along.
    model = MLP((6, 16, 3))
    centres = initial_conditions(model, 6)
    ball = epsilon_ball(centres, copies) if copies else jax.tree_util.tree_map(lambda x: x[:, None], centres)
    params, eta, ic = over_learning_rates(ball, [0.5, 1e-4, 1e-4, 1e-4])
    objective = classification(model)
    kwargs = dict(epochs=80, initial_condition=ic, stop_copies=CopiesSettled(40), stop_references_at=0.8)
    calls = []
    rec = run(objective, params, eta, blobs.arrays(), progress=calls.append, **kwargs)
    assert (rec.references_stopped_at >= 0).any() and (rec.references_stopped_at < 0).any()
    assert not copies or ((rec.copies_stopped_at >= 0).any() and rec.network_epochs < rec.naive_network_epochs)
    assert sum(calls) == rec.naive_network_epochs == 24 * (1 + copies) * 80
    assert len(calls) >= 80 and min(calls) > 0
    assert_same_records(rec, run(objective, params, eta, blobs.arrays(), **kwargs))


def test_the_progress_bar_ends_at_its_total(blobs, monkeypatch):
    import tqdm.auto

    bars = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    model = MLP((6, 8, 3))
    params, eta, ic = over_learning_rates(epsilon_ball(initial_conditions(model, 3), 2), [0.05, 10.0])
    # Two chunks of 3 groups: the shapes of the test above, whose compiled scans serve here too.
    run(classification(model), params, eta, blobs.arrays(), epochs=60, initial_condition=ic,
        stop_copies=CopiesSettled(40), progress=True, groups_per_chunk=3)
    assert len(bars) == 1 and bars[0].total == 6 * 3 * 60 and bars[0].n == bars[0].total


def test_a_run_without_progress_compiles_no_callback(blobs, monkeypatch):
    traced = []
    callback = jax.debug.callback

    def counting(*args, **kwargs):
        traced.append(1)
        return callback(*args, **kwargs)

    monkeypatch.setattr(jax.debug, "callback", counting)
    model = MLP((6, 7, 3))  # a shape no other test compiles, so the scans are traced here
    params = epsilon_ball(initial_conditions(model, 2), 1)
    run(classification(model), params, 1.0, blobs.arrays(), epochs=10)
    assert traced == []
    run(classification(model), params, 1.0, blobs.arrays(), epochs=10, progress=lambda n: None)
    assert traced


def test_the_bar_says_compiling_then_estimates_from_work_seen_and_never_passes_its_total(monkeypatch):
    from chaosgd import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress.ProgressBar(total=10, desc="t", parts=3)
    try:
        assert "compiling" in str(bar.bar)
        clock[0] += 600  # ten minutes of compiling: no estimate of days follows from it
        bar.update(3)
        assert bar.bar.n == 1 and "measuring" in str(bar.bar)
        clock[0] += 10
        bar.update(6)  # 2 more network-epochs in 10 s: 7 left at 5 s each
        assert bar.bar.n == 3 and "ETA 00:35" in str(bar.bar)
        for _ in range(40):
            bar.update(1)  # thirds of network-epochs, more than the total
        assert bar.bar.n == 10 == bar.total
    finally:
        bar.close()
