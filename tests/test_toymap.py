import time

import numpy as np
import pytest

from chaosgd.toymap import orbit_diagram, toy_lyapunov, toy_map


@pytest.mark.parametrize("eta", [0.1, 0.3, 0.45, 0.7, 0.9])
def test_exponent_below_one_is_that_of_the_minimum(eta):
    lam, escaped = toy_lyapunov([eta])
    assert not escaped[0]
    assert lam[0] == pytest.approx(np.log(abs(1 - 2 * eta)), abs=1e-6)


def test_exponent_at_two_is_ln3():
    # At eta = 2 the map is conjugate to -T_3: lambda = ln 3; the time average converges like 1/sqrt(n).
    lam, _ = toy_lyapunov([2.0], n_steps=200_000)
    assert lam[0] == pytest.approx(np.log(3), abs=0.01)


def test_orbits_beyond_two_escape_and_are_marked_not_plotted():
    diagram = orbit_diagram([0.5, 1.5, 2.05, 3.0])
    np.testing.assert_array_equal(diagram.escaped, [False, False, True, True])
    assert np.all(np.isnan(diagram.points[2:])) and np.all(np.isfinite(diagram.points[:2]))
    lam, escaped = toy_lyapunov([2.05, 3.0])
    assert np.all(escaped) and np.all(np.isnan(lam))


def test_orbit_diagram_shows_fixed_point_then_period_two():
    diagram = orbit_diagram([0.5, 1.1])
    assert np.allclose(np.abs(diagram.points[0]), 1.0)          # settled on a minimum
    period_two = np.unique(np.round(diagram.points[1], 9))
    assert len(period_two) == 2                                  # first period doubling past eta = 1
    np.testing.assert_allclose(toy_map(toy_map(period_two, 1.1), 1.1), period_two, atol=1e-9)


def test_two_thousand_learning_rates_in_well_under_two_seconds():
    etas = np.linspace(0.01, 2.2, 2000)
    start = time.perf_counter()
    orbit_diagram(etas)
    toy_lyapunov(etas)
    assert time.perf_counter() - start < 2.0


def test_bad_learning_rates_are_refused():
    with pytest.raises(ValueError, match="> 0"):
        toy_lyapunov([0.5, -1.0])
