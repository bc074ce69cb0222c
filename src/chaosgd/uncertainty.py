"""Final-state sensitivity: the uncertainty exponent (Grebogi, McDonald, Ott, Yorke, "Final state sensitivity: an
obstruction to predictability", Phys. Lett. A 99, 1983).

Take pairs of initial conditions a distance epsilon apart and let ``f(epsilon)`` be the fraction of pairs whose final
outcomes differ (which attractor, converged or diverged, trained or not). Near a basin boundary of box-counting
dimension ``d`` in a space of dimension ``D``, ``f(epsilon) ~ A epsilon^phi`` with ``phi = D - d``: a smooth boundary
gives ``phi = 1``, a fractal one ``phi < 1``, and ``phi`` near 0 means that no finite precision predicts the outcome.

``phi`` is fitted by maximum likelihood to the counts (each radius's count of differing pairs binomial with
probability ``A epsilon^phi``), so radii where no pair differs still count; its interval is the profile-likelihood
one. The fit is flagged, not refused, when the radii span fewer than ``MIN_DECADES`` decades or the counts do not
follow a power law (deviance test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chaosgd.defaults import CONFIDENCE

MIN_DECADES = 3.0  # radii spanning fewer decades than this do not pin an exponent down (Grebogi et al. use ~5)
POWER_LAW_P = 0.01  # a deviance test below this level says f(epsilon) is not one power law over the radii

# Outcomes of a trained network (``network_outcomes``), judged on the mean over its last FINAL_EPOCHS records.
DIVERGED, NOT_TRAINED, TRAINED = 0, 1, 2
FINAL_EPOCHS = 20  # as the trainability boundary's convergence measure (Sohl-Dickstein 2024): the last 20 steps


@dataclass(frozen=True)
class Uncertainty:
    """The uncertainty fraction at each radius and the exponent fitted to it.

    Attributes:
        epsilon: the radii, increasing.
        differ, pairs: pairs whose outcomes differ, and pairs, at each radius.
        fraction, fraction_low, fraction_high: ``differ / pairs`` and its Wilson interval.
        phi, phi_low, phi_high: the exponent of ``f = A epsilon^phi`` and its profile-likelihood interval (NaN where
            it cannot be fitted; an end at infinity where the likelihood does not close the interval).
        prefactor: A.
        confidence: of both intervals.
        decades: ``log10(epsilon_max / epsilon_min)``.
        power_law_p: p-value of the fit's deviance (chi-square with n - 2 degrees of freedom).
        reason: empty when phi is resolved; else why it is NaN or not to be trusted.
    """

    epsilon: np.ndarray
    differ: np.ndarray
    pairs: np.ndarray
    fraction: np.ndarray
    fraction_low: np.ndarray
    fraction_high: np.ndarray
    phi: float
    phi_low: float
    phi_high: float
    prefactor: float
    confidence: float
    decades: float
    power_law_p: float
    reason: str

    @property
    def resolved(self) -> bool:
        return not self.reason


def uncertainty_exponent(epsilon, differ, pairs, *, confidence: float = CONFIDENCE) -> Uncertainty:
    """Fit ``f(epsilon) = A epsilon^phi`` to counts of differing pairs at three or more radii.

    Maximises ``sum_i k_i ln p_i + (n_i - k_i) ln(1 - p_i)`` with ``p_i = A epsilon_i^phi <= 1`` (k differing of n
    pairs at radius epsilon_i); the interval holds the phi whose profile log-likelihood lies within
    ``chi2_1(confidence) / 2`` of the maximum.
    """
    from scipy import optimize, stats

    epsilon, differ, pairs = (np.asarray(a, dtype=float).ravel() for a in (epsilon, differ, pairs))
    if not epsilon.size == differ.size == pairs.size:
        raise ValueError(f"epsilon, differ and pairs need one value per radius; got {epsilon.size}, {differ.size}, "
                         f"{pairs.size}")
    if epsilon.size < 3:
        raise ValueError(f"an exponent needs counts at 3 or more radii; got {epsilon.size}")
    if not (np.all(np.isfinite(epsilon)) and np.all(epsilon > 0)):
        raise ValueError(f"radii must be finite and > 0; got {epsilon.tolist()}")
    if np.unique(epsilon).size != epsilon.size:
        raise ValueError(f"radii must not repeat; got {epsilon.tolist()}")
    if np.any(pairs < 1) or np.any(differ < 0) or np.any(differ > pairs) or np.any(differ % 1) or np.any(pairs % 1):
        raise ValueError("counts must be integers with 0 <= differ <= pairs and pairs >= 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    order = np.argsort(epsilon)
    epsilon, differ, pairs = epsilon[order], differ[order], pairs[order]
    ci = [stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="wilson") for k, n in zip(differ, pairs)]
    x = np.log(epsilon)
    decades = float(np.log10(epsilon[-1] / epsilon[0]))

    def result(phi=np.nan, low=np.nan, high=np.nan, prefactor=np.nan, p=np.nan, reason=""):
        return Uncertainty(epsilon, differ.astype(int), pairs.astype(int), differ / pairs,
                           np.array([c.low for c in ci]), np.array([c.high for c in ci]), float(phi), float(low),
                           float(high), float(prefactor), confidence, decades, float(p), reason)

    if not differ.any():
        return result(reason="no pair's outcome differs at any radius: the outcomes are insensitive at these radii "
                             "(phi is not resolved; try larger radii or more pairs)")
    if np.all(differ == pairs):
        return result(reason="every pair's outcome differs at every radius: f(epsilon) = 1, no exponent (try smaller "
                             "radii)")

    def log_likelihood(a, phi):
        log_p = np.minimum(a + phi * x, 0.0)  # p <= 1
        p = np.exp(log_p)
        with np.errstate(divide="ignore"):
            miss = np.where(differ < pairs, (pairs - differ) * np.log1p(-np.minimum(p, 1 - 1e-15)), 0.0)
        return float(np.sum(differ * log_p + miss))

    def profile(phi):  # the best log-prefactor for this phi; p <= 1 at every radius bounds it above
        top = float(np.min(-phi * x))
        fit = optimize.minimize_scalar(lambda a: -log_likelihood(a, phi), bounds=(top - 80.0, top), method="bounded",
                                       options={"xatol": 1e-12})
        return -fit.fun, fit.x

    span = (-1.0, 10.0)  # phi lies in [0, D]; the search may stray a little beyond, to see the likelihood close
    grid = np.linspace(*span, 221)
    values = np.array([profile(phi)[0] for phi in grid])
    best = int(np.argmax(values))
    fit = optimize.minimize_scalar(lambda phi: -profile(phi)[0], bounds=(grid[max(best - 1, 0)],
                                   grid[min(best + 1, grid.size - 1)]), method="bounded", options={"xatol": 1e-10})
    phi, top = float(fit.x), -float(fit.fun)
    a = profile(phi)[1]
    cut = stats.chi2.ppf(confidence, 1) / 2

    def bound(edge):
        if top - profile(edge)[0] < cut:
            return edge * np.inf  # the likelihood does not close the interval within the span
        return optimize.brentq(lambda q: top - profile(q)[0] - cut, *sorted((phi, edge)), xtol=1e-10)

    low, high = bound(span[0]), bound(span[1])
    p_fit = np.exp(np.minimum(a + phi * x, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        deviance = 2 * np.sum(np.where(differ > 0, differ * np.log(differ / (pairs * p_fit)), 0.0)
                              + np.where(differ < pairs, (pairs - differ)
                                         * np.log((pairs - differ) / (pairs * (1 - p_fit))), 0.0))
    p_value = float(stats.chi2.sf(deviance, epsilon.size - 2)) if epsilon.size > 2 else np.nan
    reasons = []
    if decades < MIN_DECADES:
        reasons.append(f"the radii span {decades:.2g} decades; an exponent needs at least {MIN_DECADES:g}")
    if p_value < POWER_LAW_P:
        reasons.append(f"f(epsilon) is not one power law over these radii (deviance p = {p_value:.2g}); it may "
                       "saturate at the larger radii")
    if not (np.isfinite(low) and np.isfinite(high)):
        reasons.append("the likelihood does not bound phi on both sides (too few differing pairs)")
    return result(phi, low, high, np.exp(a), p_value, "; ".join(reasons))


def fraction_differing(outcome, epsilon, *, low: float = 0.0, high: float = 1.0, pairs: int = 10_000,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Counts of differing outcomes of a one-dimensional system, for ``uncertainty_exponent``.

    For each radius, ``pairs`` points x uniform in ``[low, high - max(epsilon)]`` (one draw, shared by every
    radius, so that the fractions differ by the radius alone) against ``x + epsilon``. ``outcome``: a vectorised
    function from points to integer outcomes. Returns ``(differ, pairs)``, one count per radius.
    """
    epsilon = np.asarray(epsilon, dtype=float).ravel()
    if not (np.all(np.isfinite(epsilon)) and np.all(epsilon > 0) and np.all(epsilon < high - low)):
        raise ValueError(f"radii must be > 0 and below the interval's length {high - low:g}; got {epsilon.tolist()}")
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1; got {pairs}")
    x = np.random.default_rng(seed).uniform(low, high - epsilon.max(), size=pairs)
    differ = []
    for e in epsilon:
        differ.append(int(np.count_nonzero(outcome(x) != outcome(x + e))))
    return np.array(differ), np.full(epsilon.size, pairs)


def digit_basins(x, base: int = 4):
    """A one-dimensional system whose basin boundary has a known dimension: the test case of the estimator.

    The map ``x -> base x mod 1`` on [0, 1] reads x's digits in ``base``: an even digit keeps the orbit in play, the
    first odd one decides its fate (digit 1, 5, 9, ...: basin 0; 3, 7, ...: basin 1). The boundary between the two
    basins is the Cantor set of points whose digits are all even, of dimension ``d = ln ceil(base / 2) / ln base``,
    so ``phi = 1 - d`` (1/2 for base 4, ``1 - ln 3 / ln 5`` for base 5). Points still undecided after the digits
    float64 holds get outcome 2 (a set of measure zero).
    """
    if int(base) != base or base < 4:
        raise ValueError(f"base must be an integer >= 4 (two odd digits, for two basins); got {base}")
    x = np.asarray(x, dtype=float)
    outcome = np.full(x.shape, 2)
    undecided = np.ones(x.shape, dtype=bool)
    for _ in range(int(np.ceil(53 / np.log2(base)))):
        digit = np.floor(x * base)
        x = x * base - digit
        odd = undecided & (digit % 2 == 1)
        outcome[odd] = ((digit[odd] - 1) // 2) % 2
        undecided &= ~odd
    return outcome


def network_outcomes(records, target: float, *, last: int = FINAL_EPOCHS) -> np.ndarray:
    """Each member's final outcome: ``DIVERGED``, ``TRAINED`` (mean training accuracy over the last ``last``
    records at least ``target``) or ``NOT_TRAINED``; shape ``(G, 1 + M)`` like the records' members.

    A mean over the last records, not the last one alone: at large learning rates the accuracy often alternates
    from epoch to epoch (a period-2 orbit), and a snapshot would call the same orbit trained or not by its phase.
    The training accuracy is the one the records hold for every member (the test accuracy is the reference's only).
    Members must have run to the end: records whose copies or references were stopped early are refused.
    """
    if np.any(records.copies_stopped_at >= 0) or np.any(records.references_stopped_at >= 0):
        raise ValueError("final outcomes need every member trained to the last epoch; these records stopped some "
                         "early (training.stop_copies / stop_references)")
    if last < 1:
        raise ValueError(f"last must be >= 1; got {last}")
    final = np.mean(records.train_accuracy[:, :, -last:], axis=-1)
    outcome = np.where(final >= target, TRAINED, NOT_TRAINED)
    return np.where((records.diverged_at >= 0) | ~np.isfinite(final), DIVERGED, outcome)


def pairs_differing(outcomes) -> tuple[int, int]:
    """``(differing, pairs)`` over (reference, copy) pairs: copy j of each group against its copy 0."""
    outcomes = np.asarray(outcomes)
    if outcomes.ndim != 2 or outcomes.shape[1] < 2:
        raise ValueError(f"outcomes need shape (groups, 1 + copies) with copies >= 1; got {outcomes.shape}")
    return int(np.count_nonzero(outcomes[:, 1:] != outcomes[:, :1])), int(outcomes[:, 1:].size)
