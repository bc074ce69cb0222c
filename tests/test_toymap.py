import time

import numpy as np
import pytest

from chaosgd.toymap import FEIGENBAUM_DELTA, orbit_diagram, period_doubling, toy_lyapunov, toy_map


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


def test_period_doubling_points_match_their_closed_forms():
    # b_1: f'(1) = 1 - 2 eta = -1. b_2 = sqrt 5 - 1: the 2-cycle's multiplier reaches -1. s_0 = 1/2: f'(1) = 0.
    # s_1 = 3/sqrt 2 - 1: the critical point lies on the 2-cycle (checked by solving f(f(c)) = c symbolically).
    cascade = period_doubling(4)
    assert cascade.bifurcations[0] == 1.0
    assert cascade.bifurcations[1] == pytest.approx(np.sqrt(5) - 1, rel=1e-14)
    assert cascade.superstable[0] == 0.5
    assert cascade.superstable[1] == pytest.approx(3 / np.sqrt(2) - 1, rel=1e-14)
    # Interleaved: s_(n-1) < b_n < s_n.
    s, b = cascade.superstable, cascade.bifurcations
    assert np.all(s[:-1] < b) and np.all(b < s[1:])


def test_feigenbaum_delta_from_the_cascade():
    cascade = period_doubling(10)
    # Both sequences' ratios approach delta, the error shrinking about delta-fold per level.
    assert abs(cascade.delta[-1] / FEIGENBAUM_DELTA - 1) < 1e-5
    assert abs(cascade.delta_superstable[-1] / FEIGENBAUM_DELTA - 1) < 1e-5
    errors = np.abs(cascade.delta - FEIGENBAUM_DELTA)
    assert np.all(errors[1:] < errors[:-1] / 3)
    # The accumulation point: the chaotic band starts there (the Lyapunov exponent turns positive just after).
    assert 1.30228 < cascade.accumulation < 1.30229
    lam, _ = toy_lyapunov([cascade.bifurcations[-1], 1.32])
    assert lam[0] < 0.01 and lam[1] > 0


def test_period_doubling_refuses_levels_beyond_float64():
    with pytest.raises(ValueError, match="levels must be an integer in 3 .. 11"):
        period_doubling(12)
    with pytest.raises(ValueError, match="levels"):
        period_doubling(2.5)
