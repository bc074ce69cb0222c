"""Final-state sensitivity: the uncertainty exponent (Grebogi, McDonald, Ott, Yorke, "Final state sensitivity: an
obstruction to predictability", Phys. Lett. A 99, 1983).

Take pairs of initial conditions a distance epsilon apart and let ``f(epsilon)`` be the fraction of pairs whose final
outcomes differ (which attractor, converged or diverged, trained or not). Near a basin boundary of box-counting
dimension ``d`` in a space of dimension ``D``, ``f(epsilon) ~ A epsilon^phi`` with ``phi = D - d``: a smooth boundary
gives ``phi = 1``, a fractal one ``phi < 1``, and ``phi`` near 0 means that no finite precision predicts the outcome.

``phi`` is fitted by maximum likelihood to the counts (each radius's count of differing pairs binomial with
probability ``A epsilon^phi``, at most 1), so radii where no pair differs still count. Its interval is the
profile-likelihood one for counts drawn afresh at each radius (``uncertainty_exponent``), and a bootstrap over
initial conditions when the same ones serve every radius (``uncertainty_from_initial_conditions``, as a sweep's
epsilon-balls do). The fit is flagged, not refused, when the radii span fewer than ``MIN_DECADES`` decades, too few
pairs differ, the fraction saturates, phi < 0, or the counts do not follow a power law (deviance test).

A trained network's outcome (``network_outcomes``) is three-way by default (diverged / trained / not), or with
``outcome="loss"`` the bin of its final training loss on a log scale, which still changes where every network ends in
one class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chaosgd.defaults import CONFIDENCE

MIN_DECADES = 3.0  # radii spanning fewer decades than this do not pin an exponent down (Grebogi et al. use ~5)
POWER_LAW_P = 0.01  # a deviance test below this level says f(epsilon) is not one power law over the radii
MIN_DIFFERING = 10  # differing pairs, over all radii, below which an exponent is not trusted
SATURATED = 0.5  # a fraction of differing pairs above which f(epsilon) has left its power law

# Outcomes of a trained network (``network_outcomes``), judged on the mean over its last FINAL_EPOCHS records.
DIVERGED, NOT_TRAINED, TRAINED = 0, 1, 2
FINAL_EPOCHS = 20  # as the trainability boundary's convergence measure (Sohl-Dickstein 2024): the last 20 steps
OUTCOMES = {  # network_outcomes(outcome=...): name -> what it is, as uncertainty.json and the docs say it
    "class": "diverged | mean training accuracy over the last {last} records >= {target:g} | below it",
    "loss": "diverged | bin of log10(mean training loss over the last {last} records), bins {width:g} decades wide "
            "with edges at 10^(k {width:g})",
}
LOSS_BIN_DECADES = 0.1  # the loss outcome's default bin: a factor 10^0.1 = 1.26 in the final loss
MIN_BIN_DECADES = 1e-12  # narrower bins would sort a float64 mean loss's rounding (~1e-14 relative), not outcomes
LOSS_DIVERGED = int(np.iinfo(np.int64).min)  # the loss outcome of a diverged member: no bin reaches it


@dataclass(frozen=True)
class Uncertainty:
    """The uncertainty fraction at each radius and the exponent fitted to it.

    Attributes:
        epsilon: the radii, increasing.
        differ, pairs: at each radius, the changed outcomes (differing pairs, or uncertain initial conditions for
            ``uncertainty_from_initial_conditions``) and the trials (pairs, or initial conditions).
        fraction, fraction_low, fraction_high: ``differ / pairs`` and its Wilson interval.
        phi, phi_low, phi_high: the exponent of ``f = A epsilon^phi`` and its interval (profile likelihood, or a
            bootstrap over initial conditions; NaN where phi cannot be fitted; an end at infinity where the
            likelihood does not close the interval).
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
    """Fit ``f(epsilon) = A epsilon^phi`` to counts of differing pairs at three or more radii, the counts at
    different radii independent (pairs drawn afresh at each radius).

    Maximises ``sum_i k_i ln p_i + (n_i - k_i) ln(1 - p_i)`` over A and phi with ``p_i = A epsilon_i^phi``
    constrained to at most 1 (k differing of n pairs at radius epsilon_i); the interval holds the phi whose profile
    log-likelihood lies within ``chi2_1(confidence) / 2`` of the maximum.
    """
    from scipy import stats

    epsilon, differ, pairs = _checked(epsilon, differ, pairs, confidence)
    fit = _Fit(epsilon, differ, pairs, confidence)
    if fit.unfitted:
        return fit.result()
    from scipy.optimize import brentq

    cut = fit.profile([fit.phi])[0][0] - stats.chi2.ppf(confidence, 1) / 2
    values = fit.profile(PHI_GRID)[0]
    below = np.flatnonzero(values < cut)  # the profile is unimodal: the phi above the cut form an interval

    def end(outside):  # between a grid point below the cut and the best phi, where the profile crosses it
        return brentq(lambda phi: fit.profile([phi])[0][0] - cut, *sorted((PHI_GRID[outside], fit.phi)), xtol=1e-9)

    left, right = below[PHI_GRID[below] < fit.phi], below[PHI_GRID[below] > fit.phi]
    return fit.result(end(left[-1]) if left.size else -np.inf, end(right[0]) if right.size else np.inf)


def uncertainty_from_initial_conditions(epsilon, uncertain, *, confidence: float = CONFIDENCE,
                                        resamples: int = 1000, seed: int = 0) -> Uncertainty:
    """``uncertainty_exponent`` for initial conditions measured at every radius: ``uncertain[i, j]`` says whether
    initial condition i's outcome changed within radius ``epsilon[j]`` (some perturbed copy ended differently; the
    definition of Grebogi et al.). The same initial conditions, perturbed along the same directions, serve every
    radius, so the counts at different radii are correlated: the interval is a percentile bootstrap over the initial
    conditions (each resample refitted), not the likelihood's.
    """
    uncertain = np.asarray(uncertain, dtype=bool)
    if uncertain.ndim != 2 or uncertain.shape[1] != np.size(epsilon) or uncertain.shape[0] < 2:
        raise ValueError(f"uncertain needs shape (initial conditions >= 2, radii = {np.size(epsilon)}); got "
                         f"{uncertain.shape}")
    if int(resamples) != resamples or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100; got {resamples}")
    n = uncertain.shape[0]
    order = np.argsort(np.asarray(epsilon, dtype=float).ravel())
    epsilon, differ, pairs = _checked(epsilon, uncertain.sum(axis=0), np.full(uncertain.shape[1], n), confidence)
    fit = _Fit(epsilon, differ, pairs, confidence)
    if fit.unfitted:
        return fit.result()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(int(resamples), n))
    counts = uncertain[:, order][picks].sum(axis=1).astype(float)  # (resamples, radii), radii increasing
    fittable = counts.any(axis=1) & ~np.all(counts == pairs, axis=1)
    phis = np.full(counts.shape[0], np.nan)
    phis[fittable] = _best(fit.x, counts[fittable], pairs)[0]
    tail = (1 - confidence) / 2
    if np.mean(~fittable) > tail:  # resamples with no exponent at all (nothing or everything changed): not bounded
        return fit.result(-np.inf, np.inf)
    # Those few stand at both ends (an unfittable resample says nothing about which way), and a resample whose best
    # phi is at the grid's edge has none within it: an end beyond the grid is open.
    phis[~fittable] = np.tile([-np.inf, np.inf], phis.size)[:phis.size][~fittable]
    low, high = np.quantile(phis, [tail, 1 - tail], method="inverted_cdf")  # (no interpolation with an infinity)
    return fit.result(-np.inf if low <= PHI_GRID[0] else low, np.inf if high >= PHI_GRID[-1] else high)


PHI_GRID = np.linspace(-1.0, 6.0, 1401)  # phi lies in [0, D]; the grid reaches beyond, to see the likelihood close


def _profile(x, k, n, phis):
    """For counts ``k`` (B, radii) of ``n`` at log-radii ``x``, and candidate exponents ``phis`` (B, G): the
    log-likelihood maximised over the log-prefactor a, and that a, each (B, G). For a given phi the score
    ``sum k - sum (n - k) p / (1 - p)`` falls with a: bisection, below the a at which p reaches 1."""
    k, phis = k[:, None, :], phis[..., None]
    top = -np.max(phis * x, axis=-1)  # p <= 1 at every radius
    low, high = top - 80.0, top.copy()
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for _ in range(60):
            mid = 0.5 * (low + high)
            p = np.exp(mid[..., None] + phis * x)
            rising = k.sum(axis=-1) > np.sum(np.where(n > k, (n - k) * p / (1 - p), 0.0), axis=-1)
            low, high = np.where(rising, mid, low), np.where(rising, high, mid)
        a = 0.5 * (low + high)
        log_p = np.minimum(a[..., None] + phis * x, 0.0)
        miss = np.where(n > k, (n - k) * np.log1p(-np.minimum(np.exp(log_p), 1 - 1e-16)), 0.0)
    return np.sum(k * log_p + miss, axis=-1), a


def _best(x, k, n):
    """The maximum-likelihood phi and log-prefactor for each row of counts ``k`` (B, radii): on a coarse grid, then
    a fine one around its best, then the vertex of the parabola through the best three fine points."""
    coarse = PHI_GRID[::20]
    values = _profile(x, k, n, np.broadcast_to(coarse, (k.shape[0], coarse.size)))[0]
    offsets = PHI_GRID[:41] - PHI_GRID[20]  # +-0.1 in the fine grid's steps
    grid = coarse[np.argmax(values, axis=1)][:, None] + offsets
    values, a = _profile(x, k, n, grid)
    i = np.clip(np.argmax(values, axis=1), 1, offsets.size - 2)
    rows = np.arange(k.shape[0])
    y0, y1, y2 = values[rows, i - 1], values[rows, i], values[rows, i + 1]
    curve = y0 - 2 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(curve < 0, 0.5 * (offsets[1] - offsets[0]) * (y0 - y2) / curve, 0.0)
    phi = grid[rows, i] + np.clip(shift, -(offsets[1] - offsets[0]), offsets[1] - offsets[0])
    return phi, _profile(x, k, n, phi[:, None])[1][:, 0]


def _checked(epsilon, differ, pairs, confidence):
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
    return epsilon[order], differ[order], pairs[order]


class _Fit:
    """The maximum-likelihood fit of ``A epsilon^phi`` to counts at increasing radii, and the flags on it."""

    def __init__(self, epsilon, differ, pairs, confidence):
        self.epsilon, self.differ, self.pairs, self.confidence = epsilon, differ, pairs, confidence
        self.x = np.log(epsilon)
        self.unfitted = not differ.any() or np.all(differ == pairs)
        self.phi = self.a = np.nan
        if not self.unfitted:
            phi, a = _best(self.x, differ[None], pairs)
            self.phi, self.a = float(phi[0]), float(a[0])

    def profile(self, phis):
        """The log-likelihood maximised over the prefactor at each of ``phis``, and that log-prefactor."""
        values, a = _profile(self.x, self.differ[None], self.pairs, np.asarray(phis)[None])
        return values[0], a[0]

    def result(self, low=np.nan, high=np.nan) -> Uncertainty:
        from scipy import stats

        k, n = self.differ, self.pairs
        ci = [stats.binomtest(int(i), int(j)).proportion_ci(self.confidence, method="wilson") for i, j in zip(k, n)]
        decades = float(np.log10(self.epsilon[-1] / self.epsilon[0]))
        reasons, p_value = [], np.nan
        if not k.any():
            reasons.append("no outcome changed at any radius: the outcomes are insensitive at these radii (try larger "
                           "radii or more samples)")
        elif np.all(k == n):
            reasons.append("every outcome changed at every radius: f(epsilon) = 1 (try smaller radii)")
        else:
            fitted = np.exp(np.minimum(self.a + self.phi * self.x, 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                deviance = 2 * np.sum(np.where(k > 0, k * np.log(k / (n * fitted)), 0.0)
                                      + np.where(k < n, (n - k) * np.log((n - k) / (n * (1 - fitted))), 0.0))
            p_value = float(stats.chi2.sf(deviance, k.size - 2))
            if decades < MIN_DECADES:
                reasons.append(f"the radii span {decades:.2g} decades; an exponent needs at least {MIN_DECADES:g}")
            if k.sum() < MIN_DIFFERING:
                reasons.append(f"only {int(k.sum())} changed outcomes over all radii; an exponent needs "
                               f"{MIN_DIFFERING} or more")
            if np.max(k / n) > SATURATED:
                reasons.append(f"f(epsilon) reaches {np.max(k / n):.2f}: saturated at the larger radii (use "
                               "smaller ones)")
            if p_value < POWER_LAW_P:
                reasons.append(f"f(epsilon) is not one power law over these radii (deviance p = {p_value:.2g})")
            if self.phi < 0:
                reasons.append(f"phi = {self.phi:.3g} < 0: f(epsilon) falls as epsilon grows, which no basin boundary "
                               "does (noise, or too few pairs)")
            if not (np.isfinite(low) and np.isfinite(high)):
                reasons.append("the interval is open: the data do not bound phi on both sides")
        return Uncertainty(self.epsilon, k.astype(int), n.astype(int), k / n, np.array([c.low for c in ci]),
                           np.array([c.high for c in ci]), float(self.phi), float(low), float(high),
                           float(np.exp(self.a)), self.confidence, decades, p_value, "; ".join(reasons))


def fraction_differing(outcome, epsilon, *, low: float = 0.0, high: float = 1.0, pairs: int = 10_000,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Counts of differing outcomes of a one-dimensional system, for ``uncertainty_exponent``.

    For each radius, ``pairs`` points x uniform in ``[low, high - max(epsilon)]`` (drawn afresh for each radius,
    so that the counts are independent, as ``uncertainty_exponent``'s interval assumes) against ``x + epsilon``.
    ``outcome``: a vectorised function from points to integer outcomes. Returns ``(differ, pairs)``, one count per
    radius.
    """
    epsilon = np.asarray(epsilon, dtype=float).ravel()
    if not (np.all(np.isfinite(epsilon)) and np.all(epsilon > 0) and np.all(epsilon < high - low)):
        raise ValueError(f"radii must be > 0 and below the interval's length {high - low:g}; got {epsilon.tolist()}")
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1; got {pairs}")
    rng = np.random.default_rng(seed)
    differ = []
    for e in epsilon:
        x = rng.uniform(low, high - epsilon.max(), size=pairs)
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


def network_outcomes(records, target: float | None = None, *, outcome: str = "class",
                     bin_decades: float | None = None, last: int = FINAL_EPOCHS) -> np.ndarray:
    """Each member's final outcome, an integer; shape ``(G, 1 + M)`` like the records' members.

    Keyword arguments:
        outcome: ``"class"`` (the default): ``DIVERGED``, ``TRAINED`` (mean training accuracy over the last
            ``last`` records at least ``target``) or ``NOT_TRAINED``. ``"loss"``: the bin of the final training
            loss on a log scale, ``floor(log10(L) / bin_decades)`` with ``L`` the mean of the recorded training loss
            (the objective, any L2 term included) over the last ``last`` records, and ``LOSS_DIVERGED`` for a
            member that diverged.
        target: the training accuracy that counts as trained; required by ``"class"``, refused by ``"loss"``.
        bin_decades: the loss bins' width in decades of the loss (default ``LOSS_BIN_DECADES``, at least
            ``MIN_BIN_DECADES``); ``"loss"`` only.
        last: the records averaged (default ``FINAL_EPOCHS``).

    A mean over the last records, not the last one alone: at large learning rates the accuracy and the loss often
    alternate from epoch to epoch (a period-2 orbit), and a snapshot would give the same orbit two outcomes by its
    phase. The training accuracy and loss are what the records hold for every member (the test accuracy is the
    reference's only; predicted labels are not recorded).

    Why a loss outcome: the three-way one cannot change where all networks end alike (Iris at eta >= 1 ends at
    chance), however chaotic their training. The binned loss changes whenever a perturbation moves the final loss
    across a bin edge, so it resolves final states within one class. Its edges are level sets of the final loss: where
    that loss depends smoothly on the initial weights they are smooth and phi = 1 whatever the width (which changes
    only the prefactor); phi < 1 says the final loss is more sensitive than any smooth dependence. Bins are anchored
    at 1 (edges at ``10^(k bin_decades)``), a loss of exactly 0 falls in the lowest bin float64 reaches.

    Members must have run to the end: records whose copies or references were stopped early are refused.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(map(repr, OUTCOMES))}; got {outcome!r}")
    if outcome == "class" and target is None:
        raise ValueError("outcome 'class' needs a target training accuracy")
    if outcome == "class" and bin_decades is not None:
        raise ValueError("bin_decades is the width of the loss outcome's bins; outcome 'class' has none")
    if outcome == "loss" and target is not None:
        raise ValueError("outcome 'loss' bins the final loss and has no target accuracy; give target only with "
                         "outcome 'class'")
    width = LOSS_BIN_DECADES if bin_decades is None else bin_decades
    if outcome == "loss" and not (np.isfinite(width) and width >= MIN_BIN_DECADES):
        raise ValueError(f"bin_decades must be finite and >= {MIN_BIN_DECADES:g} decades (narrower bins sort "
                         f"rounding errors); got {bin_decades}")
    if np.any(records.copies_stopped_at >= 0) or np.any(records.references_stopped_at >= 0):
        raise ValueError("final outcomes need every member trained to the last epoch; these records stopped some "
                         "early (training.stop_copies / stop_references)")
    if int(last) != last or last < 1:
        raise ValueError(f"last must be an integer >= 1; got {last}")
    last = int(last)
    if records.train_accuracy.shape[-1] < last + 1:
        raise ValueError(f"the final outcome is the mean over the last {last} records, and these records hold "
                         f"{records.train_accuracy.shape[-1] - 1} after the first: train for more epochs")
    diverged = records.diverged_at >= 0
    if outcome == "class":
        final = np.mean(records.train_accuracy[:, :, -last:], axis=-1)
        classes = np.where(final >= target, TRAINED, NOT_TRAINED)
        return np.where(diverged | ~np.isfinite(final), DIVERGED, classes)
    final = np.mean(np.asarray(records.loss, dtype=float)[:, :, -last:], axis=-1)
    diverged |= ~np.isfinite(final)
    if np.any(final[~diverged] < 0):
        raise ValueError("outcome 'loss' bins a log-scale loss and needs losses >= 0; these records hold a negative "
                         "one")
    with np.errstate(divide="ignore", invalid="ignore"):
        bins = np.floor(np.log10(np.maximum(final, np.finfo(float).tiny)) / width)
    return np.where(diverged, LOSS_DIVERGED, np.where(diverged, 0, bins).astype(np.int64))


def uncertain_initial_conditions(outcomes) -> np.ndarray:
    """Whether each group's outcome changed within its ball: some copy ended unlike its reference (copy 0)."""
    outcomes = np.asarray(outcomes)
    if outcomes.ndim != 2 or outcomes.shape[1] < 2:
        raise ValueError(f"outcomes need shape (groups, 1 + copies) with copies >= 1; got {outcomes.shape}")
    return np.any(outcomes[:, 1:] != outcomes[:, :1], axis=1)
