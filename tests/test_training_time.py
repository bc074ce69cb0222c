import numpy as np
import pytest

from chaosgd.training_time import time_to_accuracy


def test_first_passage_and_censoring():
    acc = np.array([[0.1, 0.5, 0.91, 0.80, 0.95],    # reaches 0.9 at epoch 2 (then dips: still 2)
                    [0.1, 0.2, 0.30, 0.40, 0.50],    # never: censored
                    [0.9, 0.9, 0.90, 0.90, 0.90],    # at epoch 0; >= counts
                    [0.1, np.nan, np.nan, np.nan, np.nan]])  # diverged: censored, NaN never reaches
    tt = time_to_accuracy(acc, 0.9)
    np.testing.assert_array_equal(tt.censored, [False, True, False, True])
    np.testing.assert_array_equal(tt.epoch[[0, 2]], [2, 0])
    assert np.isnan(tt.epoch[1]) and tt.n_censored == 2 and tt.budget == 4
    assert tt.mean() == 1.0
    assert tt.describe() == "1.0 ± 1.0 epochs to 90% (2/4 censored at 4)"
    single = time_to_accuracy(acc[1:3], 0.9)
    assert single.describe() == "0.0 epochs to 90% (1/2 censored at 4)"


def test_all_censored_has_no_mean():
    tt = time_to_accuracy(np.zeros((3, 10)), 0.5)
    assert np.isnan(tt.mean()) and "never reached" in tt.describe()


@pytest.mark.parametrize("target", [0.0, 1.5, -0.2])
def test_target_outside_unit_interval_is_refused(target):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        time_to_accuracy(np.zeros((1, 3)), target)
