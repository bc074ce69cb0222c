"""Figures of the paper from stored results. Each function draws on the axes it is given (or a new figure's) and
returns them; none recomputes anything."""

from __future__ import annotations

import numpy as np

from chaosgd.lyapunov import LocalExponent, NetworkExponent
from chaosgd.toymap import OrbitDiagram


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt
        _, ax = plt.subplots(figsize=(6.4, 4.4), constrained_layout=True)
    return ax


def plot_distance(distance: np.ndarray, fit: LocalExponent, *, eta: float | None = None, ax=None):
    """The paper's figure 2: d_j(t) of the M copies around one initial condition (semi-log, one colour each), the
    fitted line ``exp(a + lambda t)`` over the exponential phase, and that fit window shaded."""
    ax = _axes(ax)
    t = np.arange(distance.shape[-1]) / fit.records_per_epoch
    for j, d in enumerate(np.asarray(distance)):
        ax.semilogy(t, d, lw=1.0, alpha=0.8,
                    label=f"$d_j(t)$, j = 1..{len(distance)} (one colour each)" if j == 0 else None)
    if np.isfinite(fit.exponent):
        start, stop = fit.window
        window = np.linspace(start, stop, fit.stop - fit.start + 1)
        ax.semilogy(window, np.exp(fit.line(window)), "k--", lw=2,
                    label=rf"fit: $\lambda$ = {fit.exponent:.3f}, $R^2$ = {fit.r2:.3f}")
        ax.axvspan(start, stop, color="0.9", zorder=0, label=f"fit window [{start:g}, {stop:g}]")
    ax.set_xlabel("epoch t")
    ax.set_ylabel("distance d(t) (L1)")
    if eta is not None:
        ax.set_title(rf"$\eta$ = {eta:g}")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_network_exponent(net: NetworkExponent, *, eta: float | None = None, ax=None, hist_ax=None,
                          bins: int = 20):
    """The paper's figure 3: mean log-distance y(t) = <ln d_j(t)> of every initial condition (red: its local exponent
    counts as positive; blue: it does not), and the histogram of local exponents with lambda_NMLE marked.

    The histogram goes on ``hist_ax``; without ``ax`` a figure with both panels side by side is made (the paper's
    inset would cover curves). Returns the curves' axes."""
    if ax is None:
        import matplotlib.pyplot as plt
        _, (ax, hist_ax) = plt.subplots(1, 2, figsize=(9.6, 4.4), width_ratios=(2.2, 1), constrained_layout=True)
    for fit in net.local:
        ax.plot(fit.time, fit.log_distance, lw=0.8, alpha=0.5,
                color="tab:red" if fit.positive else "tab:blue")
    ax.plot([], [], color="tab:red", label="counted positive")
    ax.plot([], [], color="tab:blue", label="not positive")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("epoch t")
    ax.set_ylabel(r"$y(t) = \langle \ln d_j(t) \rangle_j$")
    title = rf"$\lambda_{{NMLE}}$ = {net.mean:.3f} ± {net.std:.3f}, p = {net.p:.0f}%"
    ax.set_title((rf"$\eta$ = {eta:g}: " if eta is not None else "") + title, fontsize=10)
    if hist_ax is not None:  # stacked: the exponents counted positive (red) on those that are not (grey)
        values = net.exponents
        ok = np.isfinite(values)
        positive = np.array([f.positive for f in net.local])
        edges = np.histogram_bin_edges(values[ok], bins=bins) if ok.any() else np.linspace(0, 1, bins + 1)
        other, _ = np.histogram(values[ok & ~positive], bins=edges)
        counted, _ = np.histogram(values[ok & positive], bins=edges)
        hist_ax.stairs(other, edges, fill=True, color="0.6", label="not positive")
        hist_ax.stairs(other + counted, edges, baseline=other, fill=True, color="tab:red", alpha=0.7,
                       label="counted positive")
        if np.isfinite(net.mean):
            hist_ax.axvline(net.mean, color="k", ls="--", lw=1.5, label=r"$\lambda_{NMLE}$")
        hist_ax.legend(fontsize=8)
        hist_ax.set_xlabel(r"local exponent $\lambda_{\Omega(0)}$")
        hist_ax.set_ylabel("initial conditions")
        hist_ax.yaxis.get_major_locator().set_params(integer=True)
    return ax


def plot_orbit_diagram(diagram: OrbitDiagram, *, ax=None):
    """The paper's figure 6: orbit points of the toy map against eta; escaped learning rates are shaded."""
    ax = _axes(ax)
    eta = np.repeat(diagram.eta, diagram.points.shape[1])
    ax.plot(eta, diagram.points.ravel(), ",", color="k", alpha=0.4)
    _shade_escaped(ax, diagram.eta, diagram.escaped)
    ax.set_xlabel(r"learning rate $\eta$")
    ax.set_ylabel(r"$w$ (after the transient)")
    return ax


def plot_toy_lyapunov(eta: np.ndarray, lam: np.ndarray, escaped: np.ndarray, *, ax=None):
    """The paper's figure 7: Lyapunov exponent of the toy map against eta, zero line, escaped range shaded."""
    ax = _axes(ax)
    ax.plot(eta, lam, lw=0.8, color="tab:blue")
    ax.axhline(0, color="k", lw=0.8)
    _shade_escaped(ax, eta, escaped)
    ax.set_xlabel(r"learning rate $\eta$")
    ax.set_ylabel(r"$\lambda$")
    return ax


def plot_finite_time_exponents(finite_time: np.ndarray, *, eta: float | None = None, ax=None):
    """Tangent-space finite-time exponents lambda_i(t) of one trajectory (one line per direction)."""
    ax = _axes(ax)
    t = np.arange(1, finite_time.shape[0] + 1)
    for i in range(finite_time.shape[1]):
        ax.plot(t, finite_time[:, i], label=rf"$\lambda_{i + 1}(t)$")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("epoch t")
    ax.set_ylabel("finite-time exponent")
    if eta is not None:
        ax.set_title(rf"$\eta$ = {eta:g}")
    ax.legend(fontsize=8)
    return ax


def plot_sharpness(tracks, *, ax=None):
    """The paper's figure 14: sharpness along training for several eta, each with its stability limit dashed
    (2/eta for gradient descent; the update rule's own otherwise, ``SharpnessTrack.edge_of_stability``), and the
    next eigenvalues as thin lines where more were tracked (``training.sharpness_top``)."""
    ax = _axes(ax)
    for track in tracks:
        line, = ax.plot(track.epoch, track.value, marker=".", lw=1.2, label=rf"$\eta$ = {track.eta:g}")
        ax.axhline(track.edge_of_stability, color=line.get_color(), ls="--", lw=1)
        if track.top is not None and track.top.shape[1] > 1:  # the next eigenvalues, thin, in the same colour,
            # where Lanczos resolved them (residual bound within 1 % of the sharpness)
            resolved = track.top_residual[:, 1:] <= 0.01 * np.abs(track.top[:, :1])
            ax.plot(track.epoch, np.where(resolved, track.top[:, 1:], np.nan), color=line.get_color(), lw=0.6,
                    alpha=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("epoch t")
    kinds = {t.kind for t in tracks}
    what = {"hessian": r"sharpness $\sigma_{max}$", "batch": "batch sharpness",
            "preconditioned": r"preconditioned sharpness $\lambda_1(P^{-1}H)$"}
    limit = r"$2/\eta$" if all(t.kind == "hessian" and t.edge_of_stability == 2 / t.eta for t in tracks) \
        else "stability limit"
    ax.set_ylabel(f"{what[kinds.pop()] if len(kinds) == 1 else 'sharpness'} (dashed: {limit})")
    ax.legend(fontsize=8)
    return ax


def plot_density(densities: dict, *, marks=(), limit: float | None = None, title: str = "", ax=None):
    """Hessian spectral densities (``spectrum.SpectralDensity``, by label), each quadrature node drawn as a Gaussian
    of 1 % of the common range, on a log scale; ``marks``: eigenvalues drawn as thin vertical lines (e.g. the
    top k), ``limit``: a stability limit, dashed."""
    from chaosgd.spectrum import broadened_density

    ax = _axes(ax)
    nodes = np.concatenate([np.ravel(d.nodes) for d in densities.values()] + [np.ravel(marks)])
    nodes = nodes[np.isfinite(nodes)]
    low, high = (nodes.min(), nodes.max()) if nodes.size else (0.0, 1.0)
    if limit is not None:
        high = max(high, limit)
    pad = 0.05 * (high - low or 1.0)
    grid = np.linspace(low - pad, high + pad, 2000)
    for label, density in densities.items():
        if np.all(np.isfinite(density.nodes)):
            values = broadened_density(density, grid, sigma=0.01 * (grid[-1] - grid[0]))
            ax.semilogy(grid, np.maximum(values, 1e-12), lw=1.2, label=label)
    for i, value in enumerate(marks):
        ax.axvline(value, color="C3", lw=0.6, alpha=0.6, label=f"top {len(marks)} (Lanczos)" if i == 0 else None)
    if limit is not None:
        ax.axvline(limit, color="k", ls="--", lw=1, label="stability limit")
    ax.set_ylim(bottom=1e-8)
    ax.set_xlabel("Hessian eigenvalue")
    ax.set_ylabel("spectral density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return ax


def plot_spectral_density(track, *, ax=None):
    """The spectral density at the epochs a sharpness track estimated it, with its stability limit."""
    from chaosgd.spectrum import SpectralDensity

    densities = {f"epoch {e}": SpectralDensity(n, w, 0, 0)
                 for e, n, w in zip(track.density_epoch, track.density_nodes, track.density_weights)}
    return plot_density(densities, limit=track.edge_of_stability, title=rf"$\eta$ = {track.eta:g}", ax=ax)


def _shade_escaped(ax, eta, escaped):
    if np.any(escaped):
        ax.axvspan(eta[escaped].min(), eta[escaped].max(), color="0.92", zorder=0, label="orbits escape")
        ax.legend(loc="upper left", fontsize=8)


def save(ax, path) -> None:
    """Write the figure that holds ``ax`` and close it."""
    import matplotlib.pyplot as plt
    ax.figure.savefig(path, dpi=130)
    plt.close(ax.figure)


def plot_training_loss(curves: dict, *, ax=None):
    """The paper's figure 1: training loss along training at a few learning rates (one reference network each);
    ``curves`` maps eta to the loss at each epoch, or to (epochs, loss) (records within epochs)."""
    ax = _axes(ax)
    for eta, curve in curves.items():
        time, loss = curve if isinstance(curve, tuple) else (np.arange(np.size(curve)), curve)
        ax.plot(time, loss, lw=1.2, label=rf"$\eta$ = {eta:g}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch t")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    return ax


def plot_lambda_vs_eta(rows: list[dict], *, ax=None):
    """The paper's figure 4: lambda_NMLE against eta, error bars one standard deviation of the local exponents."""
    ax = _axes(ax)
    eta = np.array([r["eta"] for r in rows])
    lam = np.array([r["lambda_nmle"] for r in rows], dtype=float)
    std = np.array([r["lambda_std"] for r in rows], dtype=float)
    ok = np.isfinite(lam)  # learning rates where every copy diverged have no exponent
    if ok.any():
        ax.errorbar(eta[ok], lam[ok], yerr=np.nan_to_num(std[ok]), fmt="o-", capsize=3)
    else:
        ax.text(0.5, 0.5, "no finite exponent at any learning rate", transform=ax.transAxes, ha="center")
    ax.axhline(0, color="k", lw=0.8)
    _log_eta_axis(ax, eta)
    ax.set_ylabel(r"$\lambda_{NMLE}$")
    return ax


def _log_eta_axis(ax, eta) -> None:
    """A logarithmic learning-rate axis; with a single learning rate, a decade around it (not a zero-width one)."""
    ax.set_xscale("log")
    ax.set_xlabel(r"learning rate $\eta$")
    if np.unique(eta).size == 1:
        ax.set_xlim(eta[0] / 3, eta[0] * 3)


def plot_p_and_tau(rows: list[dict], *, ax=None):
    """The paper's figure 5 with intervals: p (percentage of initial conditions whose local exponent counts as
    positive, Wilson 95 % CI; blue diamonds) and the percentage of networks that end stuck at chance accuracy (grey
    squares) on the left axis; the time to target as censored data — the restricted mean up to the horizon (95 % CI;
    red dots) and the Kaplan-Meier median (open red circles; none where fewer than half reached the target) — on the
    right axis; against eta."""
    ax = _axes(ax)
    eta = np.array([r["eta"] for r in rows])
    p = np.array([r["p_percent"] for r in rows], dtype=float)
    p_err = [p - np.array([r["p_ci_low"] for r in rows]), np.array([r["p_ci_high"] for r in rows]) - p]
    ax.errorbar(eta, p, yerr=np.nan_to_num(p_err), fmt="D-", color="tab:blue", capsize=3, label="p (Wilson CI)")
    stuck = np.array([100 * r["stuck_at_chance"] / r["n_initial"] for r in rows])
    ax.plot(eta, stuck, "s--", color="0.4", mfc="none", ms=7, lw=0.8, zorder=5, label="stuck at chance (%)")
    _log_eta_axis(ax, eta)
    ax.set_ylabel("p, stuck (%)", color="tab:blue")
    ax.set_ylim(-5, 105)
    twin = ax.twinx()
    rmst = np.array([r["tau_rmst"] for r in rows], dtype=float)
    err = [rmst - np.array([r["tau_rmst_ci_low"] for r in rows]),
           np.array([r["tau_rmst_ci_high"] for r in rows]) - rmst]
    twin.errorbar(eta, rmst, yerr=np.nan_to_num(err), fmt="o-", color="tab:red", capsize=3,
                  label="restricted mean time to target (95 % CI)")
    median = np.array([r["tau_median"] for r in rows], dtype=float)
    shown = np.isfinite(median)
    twin.plot(eta[shown], median[shown], "o", mfc="none", color="tab:red", label="median time to target")
    horizon = max(r["tau_horizon"] for r in rows)
    twin.axhline(horizon, color="tab:red", ls=":", lw=1, label="horizon (never reached)")
    twin.set_ylim(0, horizon * 1.2)  # the horizon sits below the left axis' 100 %, where 100 % stuck is drawn
    twin.set_ylabel("epochs to target", color="tab:red")
    handles = [h for a in (ax, twin) for h in a.get_legend_handles_labels()[0]]
    if ax.figure.get_layout_engine() is not None:  # below the axes, where it covers nothing
        ax.figure.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=2, frameon=False)
    else:
        ax.legend(handles=handles, fontsize=7)
    return ax


def plot_sweet_spot(spot, *, axes=None):
    """The learning-rate search in the spirit of lr_find's plot, over log eta: above, p (Wilson interval) and
    lambda_NMLE (bootstrap interval, right axis) with the onset's bracket shaded; below, the training progress of
    every evaluation (t interval), failed learning rates (most networks diverged or at chance) as red crosses, the
    recommendation's interval shaded and the recommendation marked. Returns the two axes."""
    if axes is None:
        import matplotlib.pyplot as plt
        _, axes = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True, constrained_layout=True)
    top, bottom = axes
    evaluations = [e for e in spot.evaluations if e.n]
    eta = np.array([e.eta for e in evaluations])
    top.errorbar(eta, [e.p for e in evaluations], yerr=[[e.p - e.ci_low for e in evaluations],
                                                         [e.ci_high - e.p for e in evaluations]],
                 fmt="D", color="tab:blue", capsize=3, label="p (Wilson CI)")
    top.axhline(spot.p_high, color="tab:blue", ls=":", lw=1)
    twin = top.twinx()
    lam = np.array([e.lambda_nmle for e in evaluations])
    twin.errorbar(eta, lam, yerr=np.nan_to_num([lam - [e.lambda_low for e in evaluations],
                                                [e.lambda_high for e in evaluations] - lam]),
                  fmt="o", color="tab:purple", ms=4, capsize=2, label=r"$\lambda_{NMLE}$ (CI)")
    twin.set_ylabel(r"$\lambda_{NMLE}$ (per epoch)", color="tab:purple")
    if spot.onset is not None and np.isfinite(spot.onset.eta):
        top.axvspan(spot.onset.low, spot.onset.high, color="tab:blue", alpha=0.15, label="onset of chaos")
    top.set_ylabel("p (%)", color="tab:blue")
    top.set_ylim(-5, 105)
    top.legend(handles=[h for a in (top, twin) for h in a.get_legend_handles_labels()[0]], fontsize=7,
               loc="upper left")
    ok = [e for e in spot.evaluations if e.trainable]
    failed = [e for e in spot.evaluations if not e.trainable]
    bottom.errorbar([e.eta for e in ok], [e.progress for e in ok],
                    yerr=[[e.progress - e.progress_low for e in ok], [e.progress_high - e.progress for e in ok]],
                    fmt="o", color="tab:green", capsize=3, label="training progress (t CI)")
    if failed:
        bottom.plot([e.eta for e in failed], [e.progress for e in failed], "x", color="tab:red", ms=8,
                    label="most networks fail")
    if np.isfinite(spot.eta):
        for ax in axes:
            ax.axvline(spot.eta, color="tab:red", ls="--", lw=1)
        bottom.axvspan(spot.low, spot.high, color="tab:green", alpha=0.15, label="as fast (overlapping CI)")
        bottom.plot([], [], color="tab:red", ls="--", label=rf"recommended $\eta$ = {spot.eta:.3g}")
    epochs = max((e.epochs for e in spot.evaluations), default=0)
    bottom.set_ylabel(f"progress to target\n(mean over {epochs} epochs)")
    bottom.set_ylim(-0.05, 1.05)
    bottom.legend(fontsize=7, loc="lower left")
    _log_eta_axis(bottom, np.array([e.eta for e in spot.evaluations]))
    return axes


# Quantities of a 2-D sweep drawn as heatmaps: (column of results.csv, title, colour map).
HEATMAPS = (("p_percent", "p (%)", "viridis"), ("lambda_nmle", r"$\lambda_{NMLE}$ (per epoch)", "magma"),
            ("tau_rmst", "restricted mean epochs to target", "cividis_r"))


def _axis_order(rows: list[dict], axis: str) -> list[float]:
    """The second axis's values in increasing order; a batch size of 0 (the full batch) last, as the largest."""
    return sorted({r[axis] for r in rows}, key=lambda v: np.inf if axis == "training.batch_size" and v == 0 else v)


def _axis_label(axis: str, value: float) -> str:
    return "full" if axis == "training.batch_size" and value == 0 else f"{value:g}"


def plot_heatmaps(rows: list[dict], axis: str, *, axes=None):
    """A 2-D sweep: p, lambda_NMLE and the restricted mean time to target over eta (columns) and the second axis
    (rows), one panel each; cells not finished (or with no value) are blank, each cell carries its number."""
    if axes is None:
        import matplotlib.pyplot as plt
        _, axes = plt.subplots(1, len(HEATMAPS), figsize=(13, 4.2), constrained_layout=True)
    etas = sorted({r["eta"] for r in rows})
    values = _axis_order(rows, axis)
    for ax, (column, title, cmap) in zip(axes, HEATMAPS):
        grid = np.full((len(values), len(etas)), np.nan)
        for r in rows:
            grid[values.index(r[axis]), etas.index(r["eta"])] = r[column]
        shown = np.ma.masked_invalid(grid)
        image = ax.imshow(shown, origin="lower", aspect="auto", cmap=cmap,
                          **({"vmin": 0, "vmax": 100} if column == "p_percent" else {}))
        ax.figure.colorbar(image, ax=ax, shrink=0.85)
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                text = f"{v:.2f}".replace("-0.00", "0.00") if column == "lambda_nmle" else f"{v:.0f}"
                red, green, blue, _ = image.cmap(image.norm(v))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # the cell's luminance picks the text colour
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="w" if dark else "k")
        ax.set_xticks(range(len(etas)), [f"{e:g}" for e in etas], rotation=60, fontsize=7)
        ax.set_yticks(range(len(values)), [_axis_label(axis, v) for v in values], fontsize=7)
        ax.set_xlabel(r"learning rate $\eta$")
        ax.set_ylabel(axis)
        ax.set_title(title, fontsize=10)
    return axes


def plot_curves_by_axis(rows: list[dict], axis: str, *, axes=None):
    """A 2-D sweep as curves: p (Wilson 95 % CI) and the restricted mean time to target (95 % CI) against eta, one
    line per value of the second axis."""
    if axes is None:
        import matplotlib.pyplot as plt
        _, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for value in _axis_order(rows, axis):
        mine = [r for r in rows if r[axis] == value]
        eta = np.array([r["eta"] for r in mine])
        for ax, (mid, low, high) in zip(axes, (("p_percent", "p_ci_low", "p_ci_high"),
                                               ("tau_rmst", "tau_rmst_ci_low", "tau_rmst_ci_high"))):
            y = np.array([r[mid] for r in mine], dtype=float)
            err = [y - np.array([r[low] for r in mine]), np.array([r[high] for r in mine]) - y]
            ax.errorbar(eta, y, yerr=np.nan_to_num(err), fmt="o-", capsize=2,
                        label=f"{axis} = {_axis_label(axis, value)}")
    for ax, label in zip(axes, ("p (%)", "restricted mean epochs to target")):
        _log_eta_axis(ax, np.array([r["eta"] for r in rows]))
        ax.set_ylabel(label)
    horizon = max(r["tau_horizon"] for r in rows)
    axes[1].axhline(horizon, color="k", ls=":", lw=1, label="horizon (never reached)")
    axes[1].legend(fontsize=7)
    return axes


def plot_uncertainty(fits: dict, *, axes=None):
    """Final-state sensitivity: the uncertain fraction f(epsilon) (Wilson 95 % CI) on log-log axes with the fitted
    ``A epsilon^phi``, one colour per learning rate, radii where no pair differed drawn at the interval's upper end
    (hollow triangles) (left); and phi with its interval against eta (right; unresolved
    exponents hollow). ``fits``: eta -> ``uncertainty.Uncertainty``."""
    if axes is None:
        import matplotlib.pyplot as plt
        _, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    left, right = axes
    for eta, fit in sorted(fits.items()):
        seen = fit.fraction > 0  # radii where no pair differed: their Wilson upper bound, as a downward marker
        err = [fit.fraction[seen] - fit.fraction_low[seen], fit.fraction_high[seen] - fit.fraction[seen]]
        line = left.errorbar(fit.epsilon[seen], fit.fraction[seen], yerr=err, fmt="o", capsize=2,
                             label=rf"$\eta$ = {eta:g}")
        colour = line[0].get_color()
        left.plot(fit.epsilon[~seen], fit.fraction_high[~seen], "v", color=colour, mfc="none")
        if np.isfinite(fit.phi):
            left.plot(fit.epsilon, np.minimum(fit.prefactor * fit.epsilon ** fit.phi, 1), "-", color=colour, lw=1)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel(r"distance between the pair's initial conditions $\varepsilon$")
    left.set_ylabel(r"outcome changed within $\varepsilon$: $f(\varepsilon)$")
    left.legend(fontsize=7)
    etas = np.array(sorted(fits))
    phi = np.array([fits[e].phi for e in etas])
    low = np.array([fits[e].phi_low for e in etas])
    high = np.array([fits[e].phi_high for e in etas])
    resolved = np.array([fits[e].resolved for e in etas])
    for mask, face in ((resolved, None), (~resolved & np.isfinite(phi), "none")):
        if mask.any():
            # An open end (infinite) runs off the axes, which stop a little beyond the finite values and 0 .. 1.
            right.errorbar(etas[mask], phi[mask], yerr=np.nan_to_num([phi[mask] - low[mask], high[mask] - phi[mask]],
                                                                     posinf=1e3, neginf=1e3),
                           fmt="o", capsize=2, mfc=face, color="C0",
                           label="resolved" if face is None else "flagged (see uncertainty.json)")
    shown = np.concatenate([phi, low, high])
    shown = shown[np.isfinite(shown)]
    right.set_ylim(np.min(np.append(shown - 0.1, -0.1)), np.max(np.append(shown + 0.1, 1.1)))
    missing = ~np.isfinite(phi)
    if missing.any():  # marked along the top edge: a value drawn anywhere on the axis would read as a phi
        right.plot(etas[missing], np.full(missing.sum(), 0.97), "x", color="C3", transform=right.get_xaxis_transform(),
                   label=r"no $\varphi$ (e.g. no outcome changed)")
    right.axhline(1, color="k", ls=":", lw=1, label=r"smooth boundary ($\varphi$ = 1)")
    _log_eta_axis(right, etas)
    right.set_ylabel(r"uncertainty exponent $\varphi$")
    right.legend(fontsize=7)
    return axes
