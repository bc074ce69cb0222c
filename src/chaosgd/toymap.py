"""The paper's toy model (Appendix A): gradient descent on the double well ``V(w) = w^4/4 - w^2/2``.

The map is ``f(w) = w - eta V'(w) = w [1 - eta (w^2 - 1)]``, a cubic map with minima at w = +-1. For 0 < eta < 1
orbits settle on a minimum, where ``f'(+-1) = 1 - 2 eta`` gives ``lambda = ln|1 - 2 eta|``; past eta = 1 a
period-doubling cascade leads to chaos, and at eta = 2 the map is conjugate to the Chebyshev polynomial -T_3 on
[-sqrt 2, sqrt 2], so ``lambda = ln 3``. Past eta = 2 orbits escape to infinity.

Everything here is vectorised over a grid of learning rates (numpy, float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
