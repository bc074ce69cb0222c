"""The paper's toy model (Appendix A): gradient descent on the double well ``V(w) = w^4/4 - w^2/2``.

The map is ``f(w) = w - eta V'(w) = w [1 - eta (w^2 - 1)]``, a cubic map with minima at w = +-1. For 0 < eta < 1
orbits settle on a minimum, where ``f'(+-1) = 1 - 2 eta`` gives ``lambda = ln|1 - 2 eta|``; past eta = 1 a
period-doubling cascade leads to chaos, and at eta = 2 the map is conjugate to the Chebyshev polynomial -T_3 on
[-sqrt 2, sqrt 2], so ``lambda = ln 3``. Past eta = 2 orbits escape to infinity.

Everything here is vectorised over a grid of learning rates (numpy, float64), except the cascade's bifurcation
points (``period_doubling``), which are roots located one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Feigenbaum's delta, the universal ratio of successive period-doubling intervals of maps with a quadratic extremum
# (Feigenbaum 1978; digits from Briggs, Math. Comp. 57, 1991).
FEIGENBAUM_DELTA = 4.669201609102990


def toy_map(w, eta):
    """One gradient-descent step on the double well: ``w [1 - eta (w^2 - 1)]``."""
    return w * (1.0 - eta * (w * w - 1.0))


def toy_map_derivative(w, eta):
    """``f'(w) = 1 - eta (3 w^2 - 1)``."""
    return 1.0 - eta * (3.0 * w * w - 1.0)


def escape_radius(eta):
    """Beyond ``|w| > sqrt((2 + eta) / eta)`` every step grows |w|, so the orbit is gone to infinity."""
    return np.sqrt((2.0 + eta) / eta)


def _initial(etas, seed, sigma=0.1):
    # The paper draws w0 from N(0, 0.1); we read 0.1 as the standard deviation. One draw per learning rate.
    return np.random.default_rng(seed).normal(0.0, sigma, size=np.shape(etas))


def _iterate(w, etas, n, escaped):
    radius = escape_radius(etas)
    for _ in range(n):
        w = toy_map(w, etas)
        escaped |= ~(np.abs(w) <= radius)
        w = np.where(escaped, np.nan, w)
    return w


@dataclass(frozen=True)
class OrbitDiagram:
    """Orbit points after the transient: ``points[i]`` are the n_keep iterates at ``eta[i]``.

    Rows of learning rates whose orbit escaped to infinity are NaN and flagged in ``escaped``.
    """

    eta: np.ndarray
    points: np.ndarray
    escaped: np.ndarray


def orbit_diagram(etas, *, n_transient: int = 3000, n_keep: int = 200, seed: int = 0) -> OrbitDiagram:
    """The bifurcation (orbit) diagram of the toy map over ``etas`` (the paper's figure 6).

    ``n_transient`` steps are discarded first: at small eta the approach to a minimum is slow (rate |1 - 2 eta|).
    """
    etas = _check_etas(etas)
    escaped = np.zeros(etas.shape, dtype=bool)
    w = _iterate(_initial(etas, seed), etas, n_transient, escaped)
    points = np.empty(etas.shape + (n_keep,))
    radius = escape_radius(etas)
    for k in range(n_keep):
        w = toy_map(w, etas)
        escaped |= ~(np.abs(w) <= radius)
        w = np.where(escaped, np.nan, w)
        points[..., k] = w
    points[escaped] = np.nan
    return OrbitDiagram(etas, points, escaped)


def toy_lyapunov(etas, *, n_transient: int = 3000, n_steps: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``lambda(eta) = (1/n) sum_t ln|f'(w_t)|`` after a transient (the paper's eq. A3 and figure 7).

    Returns ``(lambda, escaped)``; lambda is NaN where the orbit escaped to infinity.
    """
    etas = _check_etas(etas)
    escaped = np.zeros(etas.shape, dtype=bool)
    w = _iterate(_initial(etas, seed), etas, n_transient, escaped)
    total = np.zeros(etas.shape)
    radius = escape_radius(etas)
    tiny = np.finfo(float).tiny  # an orbit that lands exactly on a critical point would give ln 0
    for _ in range(n_steps):
        total += np.log(np.maximum(np.abs(toy_map_derivative(w, etas)), tiny))
        w = toy_map(w, etas)
        escaped |= ~(np.abs(w) <= radius)
        w = np.where(escaped, np.nan, w)
    lam = total / n_steps
    lam[escaped] = np.nan
    return lam, escaped


def _check_etas(etas) -> np.ndarray:
    etas = np.atleast_1d(np.asarray(etas, dtype=float))
    if not np.all(np.isfinite(etas)) or np.any(etas <= 0):
        raise ValueError("learning rates must be finite and > 0")
    return etas


@dataclass(frozen=True)
class Cascade:
    """The toy map's period-doubling cascade towards chaos, located to float64 precision.

    Attributes:
        bifurcations: ``b_n``, n = 1, 2, ...: the learning rate at which the stable orbit of period ``2^(n-1)`` loses
            stability (its multiplier ``prod f'(w_k)`` over the orbit reaches -1) and one of period ``2^n`` is born.
            ``b_1 = 1`` and ``b_2 = sqrt 5 - 1`` in closed form.
        superstable: ``s_n``, n = 0, 1, ...: the learning rate at which the orbit of period ``2^n`` passes through
            the map's critical point ``c = sqrt((1 + eta) / (3 eta))`` (multiplier 0); ``s_0 = 1/2``,
            ``s_1 = 3/sqrt 2 - 1``.
        delta: ``(b_n - b_(n-1)) / (b_(n+1) - b_n)`` for n = 2, 3, ...: tends to Feigenbaum's delta.
        delta_superstable: the same ratios from the superstable points.
        accumulation: where the cascade ends and chaos begins, extrapolated geometrically from the last two
            bifurcations with the last ratio: ``b_N + (b_N - b_(N-1)) / (delta - 1)``.
    """

    bifurcations: np.ndarray
    superstable: np.ndarray
    delta: np.ndarray
    delta_superstable: np.ndarray
    accumulation: float


# Period 2^11: beyond it a root's float64 error is no longer small against the spacing of successive points
# (the last ratio's error grows from 1.5e-7 at 11 levels to 3e-6 at 14).
MAX_LEVELS = 11


def period_doubling(levels: int = 10) -> Cascade:
    """Locate the first ``levels`` period doublings of the toy map and the ratios of their intervals.

    The superstable points are the roots of ``g_n(eta) = f^(2^n)(c) - c`` (Brent's method, to roundoff), each
    bracketed from the two before it, assuming the ratio of successive intervals lies in [2.5, 8]; the bifurcation
    ``b_n`` is then the root of ``mu(eta) + 1`` between ``s_(n-1)`` and ``s_n``, ``mu`` being the multiplier of the
    orbit of period ``2^(n-1)`` found by Newton's method from the critical point. Feigenbaum's universality: the
    ratios of successive intervals of both sequences tend to ``FEIGENBAUM_DELTA`` (the map's extremum is quadratic).

    ``levels``: bifurcations to locate, 3 .. ``MAX_LEVELS`` (each doubles the orbit's period; the default's last
    ratio is within 1e-5 of delta).
    """
    from scipy.optimize import brentq

    if int(levels) != levels or not 3 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be an integer in 3 .. {MAX_LEVELS} (float64 resolves no more); got {levels}")
    levels = int(levels)

    def root(fun, low, high, *args):
        if np.sign(fun(low, *args)) == np.sign(fun(high, *args)):
            raise ArithmeticError(f"the period-doubling root is not bracketed in [{low!r}, {high!r}]")
        return brentq(fun, low, high, args=args, xtol=1e-15, rtol=8.9e-16)  # brentq's finest relative tolerance

    # s_1 lies between b_1 = 1 and the onset of period 4 (< 1.5); later ones from the two before.
    superstable = [0.5, root(_superstable_gap, 1.0, 1.5, 2)]
    for n in range(2, levels + 1):
        gap = superstable[-1] - superstable[-2]
        superstable.append(root(_superstable_gap, superstable[-1] + gap / 8, superstable[-1] + gap / 2.5, 2 ** n))
    bifurcations = [1.0] + [root(_multiplier_plus_one, superstable[n - 1], superstable[n], 2 ** (n - 1))
                            for n in range(2, levels + 1)]
    b, s = np.array(bifurcations), np.array(superstable)
    delta = (b[1:-1] - b[:-2]) / (b[2:] - b[1:-1])
    return Cascade(b, s, delta, (s[1:-1] - s[:-2]) / (s[2:] - s[1:-1]),
                   float(b[-1] + (b[-1] - b[-2]) / (delta[-1] - 1.0)))


def _critical_point(eta):
    return np.sqrt((1.0 + eta) / (3.0 * eta))  # f'(c) = 0


def _superstable_gap(eta, period):
    c = _critical_point(eta)
    w = c
    for _ in range(period):
        w = toy_map(w, eta)
    return w - c


def _multiplier_plus_one(eta, period):
    # Newton on f^p(w) = w from the critical point, which lies on the orbit at the superstable point before.
    w = _critical_point(eta)
    for _ in range(100):
        end, multiplier = _orbit_end(w, eta, period)
        step = (end - w) / (multiplier - 1.0)
        w -= step
        if abs(step) <= 1e-15 * abs(w):
            break
    return _orbit_end(w, eta, period)[1] + 1.0


def _orbit_end(w, eta, period):
    multiplier = 1.0
    for _ in range(period):
        multiplier *= toy_map_derivative(w, eta)
        w = toy_map(w, eta)
    return w, multiplier
