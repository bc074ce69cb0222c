"""``chaosgd report RUN``: one self-contained HTML file (figures embedded, tables, configuration, environment,
timings) that opens in a browser with no server. Every string that comes from the user is escaped."""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.defaults import MOSTLY, P_HIGH
from chaosgd.experiments.results import loss_curves, summarize, write_csv, write_parquet
from chaosgd.experiments.store import RunDir
from chaosgd.optimizers import SPECS

if TYPE_CHECKING:
    from chaosgd.experiments.plan import Plan


def _png(ax) -> str:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png", dpi=110)
    plt.close(ax.figure)
    return base64.b64encode(buffer.getvalue()).decode()


FIGURE_2_ETA = 10.0  # the paper's figures 2 and 3 show eta = 10 (``chaosgd lyapunov``'s default)
REPRESENTATIVE_P = 50.0  # by default figures 2 and 3 show the first learning rate with p at or above this


def representative_eta(rows: list[dict], wanted: float | None = None) -> tuple[float, str]:
    """The learning rate of figures 2 and 3 and why: the finished one nearest ``wanted``; by default the first with
    p >= 50 % whose references mostly do not diverge (where sensitivity sets in), else the one of the highest p."""
    done = np.array([r["eta"] for r in rows])
    if wanted is not None:  # checked by write_report
        return float(done[np.argmin(np.abs(np.log(done) - np.log(wanted)))]), f"the grid's nearest to {wanted:g}"
    calm = [r for r in rows if r["diverged_fraction"] <= MOSTLY and np.isfinite(r["p_percent"])] or rows
    onset = [r for r in calm if r["p_percent"] >= REPRESENTATIVE_P]
    if onset:
        return onset[0]["eta"], f"the first with p >= {REPRESENTATIVE_P:g} %"
    best = max(calm, key=lambda r: np.nan_to_num(r["p_percent"], nan=-1))
    return best["eta"], f"the highest p; none reaches {REPRESENTATIVE_P:g} %"


def write_report(run_dir: str | Path | Plan, *, lyapunov_eta: float | None = None, log=None, summary=None,
                 changes: dict | None = None, out: str | Path | None = None) -> Path:
    """Write ``report.html`` and ``results.csv`` (and ``results.parquet`` where pyarrow is installed) from the stored
    records into ``run_dir``; return the report's path. ``run_dir``: a run folder, or the ``plan.Plan`` a sweep just
    ran (its checked results and fits are used as they are: see ``results.summarize``).

    ``changes`` re-analyses the run with other values of ``results.REANALYSIS_FIELDS`` (a held target, another
    target or threshold), computing nothing again; its files then go to the folder ``out``, never into the run
    folder, whose files keep describing its own configuration.

    Figures in the paper's order, each with a caption: 1 (training loss at three eta), 2 and 3 (at
    ``representative_eta``: ``lyapunov_eta``'s nearest, by default chosen from the data), 4 (lambda_NMLE), 5 (p and the
    time to target as censored data), 14 when sharpness was tracked (``training.sharpness_every``), and 6 and 7 when
    ``run_dir/toymap`` holds them (``chaosgd reproduce`` puts them there). Task files that cannot be trusted are
    left out, named in the report and, through ``log``, one line each. ``summary``: the run's ``summarize()``, when
    the caller has it already (it is not computed twice).
    """
    # Learning rates far past divergence give numbers whose logarithmic axes overflow while drawn: the figures
    # show them as they can, without numpy's and matplotlib's overflow warnings on the terminal.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
        return _write_report(run_dir, lyapunov_eta=lyapunov_eta, log=log, summary=summary, changes=changes,
                             out=out)


def _write_report(run_dir, *, lyapunov_eta, log, summary, changes, out) -> Path:
    from chaosgd import plots

    if lyapunov_eta is not None and not (np.isfinite(lyapunov_eta) and lyapunov_eta > 0):
        raise ValueError(f"the learning rate of figures 2 and 3 must be finite and > 0; got {lyapunov_eta}")
    from chaosgd.experiments.plan import Plan
    store = run_dir.run if isinstance(run_dir, Plan) else RunDir(run_dir)
    if changes and out is None:
        raise ValueError("a re-analysis (--set) needs its own folder (--out DIR): the run folder's report and "
                         "results.csv keep describing the run's own configuration")
    dest = store.root if out is None else _reanalysis_folder(out, store)
    summary = summary or summarize(run_dir, changes=changes)  # a caller that summarized the run already passes it
    routes = _routes(summary.results)
    versions = _versions(summary.results)
    if log is not None:
        for why in summary.problems.values():
            log(f"left out, cannot be trusted: {why}")
        if summary.n_pending:
            log(f"{summary.n_pending} of {summary.n_tasks} tasks are not finished: their learning rates are left out "
                "(run the sweep again to finish them)")
        if len(routes) > 1:
            log(_mixed_routes(routes))
        if len(versions) > 1:
            log(_mixed_versions(versions))
        if summary.changes:
            log(f"re-analysis of {store.root} with " + ", ".join(f"{k} = {v}" for k, v in summary.changes.items())
                + f": report, results.csv (and results.parquet with pyarrow) in {dest}")
    config, rows = summary.config, summary.rows
    if lyapunov_eta is not None and config.training.axis is not None:
        raise ValueError("--eta chooses the learning rate of figures 2 and 3, which the report of a 2-D sweep does "
                         "not draw (it draws heatmaps over eta and the second axis)")
    info = store.info()
    run_config = store.config() if summary.changes else config  # the run's own, whatever the analysis
    dest.mkdir(parents=True, exist_ok=True)
    write_csv(rows, dest / store.csv_path.name)
    write_parquet(rows, dest / store.parquet_path.name)
    axis = config.training.axis
    figures = ([] if not rows else _figures(summary, lyapunov_eta, plots) if axis is None
               else _figures_2d(summary, plots))
    tracks = sorted((r.sharpness for r in summary.results.values() if r.sharpness is not None), key=lambda t: t.eta)
    if tracks:
        t = config.training
        what = {"hessian": "Top eigenvalue of the Hessian of the training loss",
                "batch": "Batch sharpness (the mean over the epoch's minibatches of the top eigenvalue of each one's "
                         "loss Hessian)",
                "preconditioned": "Preconditioned sharpness (the top eigenvalue of P^-1 H, P the optimiser's "
                                  "preconditioner at its last step; none before the first)"}[tracks[0].kind]
        limit = SPECS[t.optimizer].limit_text
        figures.append(("Figure 14: sharpness along training", _png(plots.plot_sharpness(tracks)),
                        f"{what} ({t.sharpness_method}, {t.sharpness_iterations} Hessian-vector products) along the "
                        f"reference trajectory of initial condition 0, every {t.sharpness_every} epoch(s), at each "
                        f"learning rate; dashed: {limit}."
                        + (" Sampled less often than every epoch, a period-2 orbit shows as a smooth curve."
                           if t.sharpness_every > 1 else "")
                        + (" Thin lines: the next " + f"{t.sharpness_top - 1} eigenvalues where Lanczos resolved "
                           "them (residual bound within 1 % of the sharpness) and they are positive (log scale)."
                           if t.sharpness_top > 1 else "")
                        + (" The density epochs are sampled too." if t.density_epochs else "")))
        of = "preconditioned Hessian P^-1 H" if tracks[0].kind == "preconditioned" else "training loss's Hessian"
        for track in tracks:
            if track.density_epoch is not None:
                probes, steps = track.density_nodes.shape[1:]
                figures.append((f"Hessian spectral density, eta = {track.eta:g}",
                                _png(plots.plot_spectral_density(track)),
                                f"Spectral density of the {of} along the same trajectory at epochs "
                                f"{', '.join(str(e) for e in track.density_epoch)}: stochastic Lanczos quadrature "
                                f"(Ghorbani et al. 2019), {probes} probes x {steps} Lanczos steps, each node drawn "
                                "as a Gaussian of 1 % of the range; dashed: the stability limit. Log scale: the "
                                "outliers beyond the bulk carry a weight of about 1/P each."))
    figures += _toy_figures(store.toymap_dir)
    finished = summary.results.values()
    seconds = sum(r.seconds for r in finished)
    net_epochs = sum(r.records.network_epochs for r in finished)
    naive = sum(r.records.naive_network_epochs for r in finished)
    n_pending, n_tasks = summary.n_pending, summary.n_tasks
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>chaosgd report: {e(config.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#f0f0f0}figcaption{font-size:14px;color:#333;margin-top:.3em}figure{margin:1.5em 0}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}img{max-width:100%}</style></head><body>",
        f"<h1>chaosgd report: {e(config.name)}</h1>",
        _reanalysis(store.root, run_config, summary.changes),
        f"<p>Configuration hash {e(run_config.hash())}; {n_tasks - n_pending} of {n_tasks} "
        f"tasks finished" + (f" (<b>{n_pending} pending</b>: rerun the sweep to complete it)" if n_pending else "")
        + f". Compute: {seconds:.1f} s over {net_epochs:,} network-epochs, against {naive:,} for running every "
        f"network every epoch ({net_epochs / max(naive, 1):.0%}).{e(_route_note(routes))}"
        + (f" Versions: {e(next(iter(versions)))} in every task." if len(versions) == 1 else "") + "</p>",
        f"<p>{e(_training(config))}</p>",
    ]
    for value, mine in _by_point(config, rows):
        where = "" if value is None else f"{axis} = {value:g}: "
        pending = sorted(set(config.training.etas) - {r["eta"] for r in mine})
        edge = edge_of_chaos(mine, config.training.target, hold=config.training.target_hold, pending=pending)
        parts.append(f"<p><b>{e(where + edge)}</b></p>")
    parts.append(_problems(summary.problems))
    if len(routes) > 1:
        parts.append(f"<p><b>{e(_mixed_routes(routes))}</b></p>")
    if len(versions) > 1:
        parts.append(f"<p><b>{e(_mixed_versions(versions))}</b></p>")
    for value, mine in _by_point(config, rows):
        parts += ["<h2>Results by learning rate" + ("" if value is None else f" at {e(axis)} = {value:g}") + "</h2>",
                  _table(mine)]
    parts.append(f"<p>{e(_table_note(config))}</p>")
    for title, data, caption in figures:
        parts += [f"<figure><h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,{data}'>",
                  f"<figcaption>{e(caption)}</figcaption></figure>"]
    parts += ["<h2>Configuration" + (" (as re-analysed)" if summary.changes else "") + "</h2>",
              f"<pre>{e(config.to_toml())}</pre>",
              "<h2>Environment</h2>", f"<pre>{e(json.dumps(info, indent=2))}</pre>", "</body></html>"]
    return atomic_write(dest / store.report_path.name, "\n".join(parts))


def _reanalysis_folder(out, store: RunDir) -> Path:
    """The folder of a re-analysis: a folder (or a new one) that is neither a run folder nor inside this run."""
    if not str(out).strip():
        raise ValueError("--out: give a folder for the re-analysis")
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"--out {dest}: exists and is not a folder")
    here, run = dest.resolve(), store.root.resolve()
    if here == run or run in here.parents:
        raise ValueError(f"--out {dest} is the run folder or inside it; the re-analysis goes to a folder of its own")
    if RunDir(dest).holds_a_run():
        raise ValueError(f"--out {dest} holds a run of its own (config.toml, run.json or tasks/), whose report "
                         "must not be overwritten by another run's re-analysis; name another folder")
    enclosing = RunDir(dest).enclosing_run()
    if enclosing is not None:
        raise ValueError(f"--out {dest} lies inside the run folder {enclosing}; name a folder outside any run")
    return dest


def _reanalysis(root: Path, run, changes: dict) -> str:
    """The line that says a report re-reads a run (configuration ``run``) with other settings, and which."""
    if not changes:
        return ""
    settings = "; ".join(f"{key} = {value} (the run: {run.value(key)})" for key, value in changes.items())
    return (f"<p><b>Re-analysis</b> of the run in {html.escape(str(root))} with {html.escape(settings)}: the "
            "records are the run's own, nothing was trained again.</p>")


def _by_point(config, rows) -> list[tuple[float | None, list[dict]]]:
    """The rows of each value of the second axis (one group, value None, in a 1-D sweep)."""
    axis = config.training.axis
    if axis is None:
        return [(None, rows)]
    return [(v, [r for r in rows if r[axis] == v]) for v in config.training.axis_values
            if any(r[axis] == v for r in rows)]


def _training(config) -> str:
    """How the networks were trained: the update rule, the batches and the second axis of a 2-D sweep."""
    t = config.training
    rule = config.rule
    text = ("Training: full-batch gradient descent (the paper's), one step per epoch" if t.optimizer == "gd"
            and t.batch_size == 0 and t.schedule == "constant" else
            f"Training: {rule.optimizer.describe(skip=(t.axis.partition('.')[2],) if t.axis else ())}")
    if t.batch_size:
        text += (f", minibatches of {t.batch_size} examples in an order drawn per initial condition and epoch, "
                 + ("shared by each reference and its copies" if t.shared_noise else
                    "each copy its own (distances then include the noise)"))
    if config.model.dropout:
        text += f", dropout {config.model.dropout:g} on the hidden units (masks "
        text += "shared by each reference and its copies)" if t.shared_noise else "each copy its own)"
    text += (". Exponents are per epoch (one pass over the training set), times to target in epochs; the learning "
             "rate is the peak of the schedule." if t.schedule != "constant" else
             ". Exponents are per epoch (one pass over the training set), times to target in epochs.")
    if t.axis is not None:
        text += (f" A 2-D sweep: eta together with {t.axis} = " + ", ".join(f"{v:g}" for v in t.axis_values) + ".")
        if t.axis in ("training.batch_size", "model.dropout"):  # the noise comes from the axis
            text += (" Minibatch orders and dropout masks are " + ("shared by each reference and its copies." if
                     t.shared_noise else "each copy's own: distances then include the noise."))
    return text


def _passage(config) -> str:
    t = config.training
    held = f", held {t.target_hold} consecutive epochs" if t.target_hold > 1 else " (first passage)"
    return f"{t.target:.0%} test accuracy{held}"


def _positive(config) -> str:
    a = config.analysis
    return f"R² > {a.r2_min:g} and slope > {a.lambda_min:g} per epoch"


def _table_note(config) -> str:
    t, a = config.training, config.analysis
    horizon = t.epochs - t.target_hold + 1
    return (f"All intervals 95 %; T = {t.epochs} epochs. lambda: the network MLE, the mean of the local exponents "
            "over the initial conditions, ± their standard deviation, and the BCa bootstrap CI of the mean. p: the "
            f"percentage of initial conditions whose local exponent counts as positive ({_positive(config)}), Wilson "
            f"CI. Time to {_passage(config)}, as censored survival data (networks that never reach it by epoch "
            f"{horizon} are censored): the percentage reached (Wilson CI), the Kaplan-Meier median ('> {horizon}' "
            f"where fewer than half reached it) and the restricted mean time up to epoch {horizon} (a network that "
            "never reaches the target counts all of it), both with CIs ('–' where undefined: no spread to estimate "
            "one); <tau> is the paper's mean over the networks "
            "that reached the target only (biased where any are censored). At chance (T): reference networks whose "
            f"test accuracy at epoch T is at most 1/classes + {a.chance_margin:g}. Diverged: references whose loss or "
            "weights became infinite or NaN. Test accuracy (T): mean over the references that did not diverge. "
            "Every column, unrounded: results.csv.")


def _toy_figures(toy: Path) -> list[tuple[str, str, str]]:
    """Figures 6 and 7 as ``chaosgd toymap`` saved them, with captions that say what its arrays show."""
    if not (toy / "toymap.npz").is_file():
        return []
    with np.load(toy / "toymap.npz") as z:
        eta, lam, escaped = z["eta"], z["lyapunov"], z["escaped"]
    chaotic = eta[np.nan_to_num(lam, nan=-1) > 0]
    where = (f"{eta.size} learning rates from {eta.min():g} to {eta.max():g}"
             + (f"; lambda > 0 first at eta = {chaotic.min():.4f}" if chaotic.size else "; lambda > 0 nowhere")
             + (f"; orbits escape from eta = {eta[escaped].min():.4f}" if escaped.any() else "") + ".")
    the_map = ("gradient descent on the paper's double well V(w) = w^4/4 - w^2/2 (its appendix A), w -> w - eta "
               "V'(w)")
    figures = []
    for name, title, caption in (
            ("fig6_orbit_diagram.png", "Figure 6: orbit diagram of the toy map",
             f"Orbit diagram of {the_map}: the points each orbit visits after its transient (from random initial "
             f"points), against eta; shaded: orbits escape to infinity. {where}"),
            ("fig7_lyapunov.png", "Figure 7: Lyapunov exponent of the toy map",
             f"Lyapunov exponent of {the_map}, the orbit average of ln|f'(w)| after the transient, against eta (zero "
             f"line drawn; 0 < eta < 1: ln|1 - 2 eta|; eta = 2: ln 3); shaded: orbits escape. {where}")):
        if (toy / name).is_file():
            figures.append((title, base64.b64encode((toy / name).read_bytes()).decode(), caption))
    return figures


def _figures(summary, lyapunov_eta, plots) -> list[tuple[str, str, str]]:
    """Figures 1 to 5 (title, PNG as base64, caption), in the paper's order."""
    config, rows = summary.config, summary.rows
    ens, target = config.ensemble, config.training.target
    curves = loss_curves(summary)
    figures = [("Figure 1: training loss", _png(plots.plot_training_loss(curves)),
                "Full-batch training loss of the reference network of initial condition 0 at "
                + ", ".join(f"eta = {eta:g}" for eta in curves)
                + " (the finished learning rates nearest the paper's 0.01, 7.5 and 20).")]
    eta, why = representative_eta(rows, lyapunov_eta)
    k = config.training.etas.index(eta)
    rec, net = summary.records(k), summary.fits[0, k][1]
    ic = int(rec.initial_condition[0])
    local = net.local[0]
    figures.append((f"Figure 2: distances around one initial condition, eta = {eta:g}",
                    _png(plots.plot_distance(rec.distance[0], local, eta=eta)),
                    f"L1 distance d_j(t) between the reference network of initial condition {ic} and each of its "
                    f"{rec.n_copies} copies perturbed in an epsilon-ball of radius {ens.epsilon:g}, at eta = {eta:g} "
                    f"({why}). Dashed: the exponential exp(a + lambda t) fitted to the mean log-distance over the "
                    f"shaded window; its slope is this initial condition's local exponent"
                    + (f" ({local.exponent:.3f} per epoch, R² = {local.r2:.3f})." if np.isfinite(local.exponent)
                       else " (none could be fitted).")))
    figures.append((f"Figure 3: local exponents, eta = {eta:g}", _png(plots.plot_network_exponent(net, eta=eta)),
                    f"Left: mean log-distance y(t) of each of the {len(net.local)} initial conditions at eta = "
                    f"{eta:g}; red: its local exponent counts as positive ({_positive(config)}; {net.n_positive} of "
                    f"{net.n_fitted} fitted), blue: it does not. Right: histogram of the local exponents, stacked: red "
                    "counted positive, grey not; dashed: their mean, lambda_NMLE, which averages both."
                    + (f" {net.n_excluded} initial condition(s) could not be fitted (every copy diverged or sat at "
                       "distance 0) and are left out." if net.n_excluded else "")))
    excluded = sum(r["n_excluded"] for r in rows)
    figures.append(("Figure 4: network maximum Lyapunov exponent", _png(plots.plot_lambda_vs_eta(rows)),
                    "lambda_NMLE, the mean of the local exponents, against eta; error bars: one standard deviation of "
                    f"the local exponents over the {rows[0]['n_initial']} initial conditions (the paper's; the CI of "
                    "the mean is in the table)."
                    + (f" {excluded} initial condition(s) could not be fitted and are left out." if excluded else "")))
    censored = [f"{r['eta']:g} ({r['tau_censored']}/{r['n_initial']})" for r in rows if r["tau_censored"]]
    stuck = [f"{r['eta']:g} ({r['stuck_at_chance']}/{r['n_initial']})" for r in rows if r["stuck_at_chance"]]
    figures.append(("Figure 5: p and the time to target", _png(plots.plot_p_and_tau(rows)),
                    "Left axis: p (blue diamonds), the percentage of initial conditions whose local exponent counts "
                    f"as positive ({_positive(config)}; 95 % Wilson intervals), and the percentage of networks that "
                    "end stuck at chance accuracy (grey squares). Right axis: epochs to "
                    f"{_passage(config)} as censored data: the restricted mean up to epoch {rows[0]['tau_horizon']} "
                    "(red dots, 95 % CI; a network that never reaches the target counts all of it; dotted line) and "
                    "the Kaplan-Meier median (open red circles; absent where fewer than half reached the target). "
                    "Censored, at eta (never reached / all): "
                    + (", ".join(censored) if censored else "none") + ". Stuck at chance accuracy: "
                    + (", ".join(stuck) if stuck else "none") + f". Target {target:.0%}."))
    return figures


def _figures_2d(summary, plots) -> list[tuple[str, str, str]]:
    """A 2-D sweep's figures: heatmaps of p, lambda_NMLE and the time to target, and their curves by axis value."""
    config, rows = summary.config, summary.rows
    axis = config.training.axis
    return [
        (f"p, lambda_NMLE and the time to target over eta and {axis}",
         _png(plots.plot_heatmaps(rows, axis)[0]),
         f"Left: p, the percentage of initial conditions whose local exponent counts as positive "
         f"({_positive(config)}); middle: lambda_NMLE, the mean local exponent; right: the restricted mean time to "
         f"{_passage(config)} up to epoch {rows[0]['tau_horizon']} (censoring-aware; a network that never reaches "
         "the target counts all of it). Blank: not finished or no value. Intervals: the tables above."),
        (f"p and the time to target against eta, by {axis}", _png(plots.plot_curves_by_axis(rows, axis)[0]),
         f"Left: p with 95 % Wilson intervals; right: the restricted mean time to {_passage(config)} with 95 % "
         f"intervals (dotted: the horizon, never reached); one line per value of {axis}."),
    ]


def _problems(problems: dict[str, str]) -> str:
    """The task files that could not be trusted, named, so nobody mistakes their learning rates for finished."""
    if not problems:
        return ""
    items = "".join(f"<li>{html.escape(why)}</li>" for why in problems.values())
    return (f"<p><b>{len(problems)} task file(s) could not be trusted</b> and were left out (their learning rates "
            f"count as unfinished; rerun the sweep to recompute them):</p><ul>{items}</ul>")


def _routes(results: dict) -> dict[str, int]:
    """How many finished tasks took each matrix-product route (``chaosgd.gemm``); files of 0.5.0 and before, which
    do not say, count as "not recorded"."""
    return dict(Counter(r.matrix_product or "not recorded" for r in results.values()))


def _route_note(routes: dict[str, int]) -> str:
    if len(routes) != 1:
        return ""
    route, = routes
    return f" Matrix products: {route} in every task (chaosgd.gemm)."


def _mixed_routes(routes: dict[str, int]) -> str:
    """The warning for a run whose workers took different routes: the routes round differently in the last bit, and
    chaos amplifies that like any perturbation, so such a run is not bit-reproducible as a whole."""
    counts = ", ".join(f"{route}: {n}" for route, n in sorted(routes.items()))
    return (f"Tasks took different matrix-product routes ({counts} tasks; chaosgd.gemm): their results agree with one "
            "another only to roundoff, which grows like any perturbation at chaotic learning rates. For one route "
            "everywhere, give every worker a C++ compiler, or set CHAOSGD_GEMM=xla for all of them.")


def _versions(results: dict) -> dict[str, int]:
    """How many finished tasks each set of versions computed (a run resumed after an upgrade holds several)."""
    return dict(Counter(r.versions or "not recorded" for r in results.values()))


def _mixed_versions(versions: dict[str, int]) -> str:
    counts = "; ".join(f"{v}: {n}" for v, n in sorted(versions.items()))
    return (f"Tasks were computed by different versions ({counts} tasks; run.json names the first run's): another "
            "version may round differently, and chaos amplifies that, so its tasks agree with the others "
            "statistically, not bit for bit. For one version everywhere, rerun into a new folder.")


def edge_of_chaos(rows, target: float, p_high: float = P_HIGH, hold: int = 1, pending=()) -> str:
    """Sentences for practitioners: where sensitivity is fully developed on this grid, where training to the target
    was fastest by the restricted mean time (censoring-aware; among learning rates whose references mostly do not
    diverge, naming those whose intervals overlap it), and where networks end stuck at chance accuracy.
    ``pending``: learning rates of the grid not finished yet; the sentences then speak of the finished ones only and
    say that they are provisional."""
    if not rows:
        return "No learning rate is finished yet."
    text = _edge_sentences(rows, target, p_high, hold)
    if not pending:
        return text
    return (f"Provisional, from {len(rows)} of {len(rows) + len(pending)} learning rates (pending: eta = "
            + ", ".join(f"{eta:g}" for eta in pending) + "): "
            + text.replace("on this grid", "among the finished learning rates"))


def _edge_sentences(rows, target: float, p_high: float, hold: int) -> str:
    developed = [r for r in rows if r["p_percent"] >= p_high and r["diverged_fraction"] <= MOSTLY
                 and 2 * r.get("n_unresolved", 0) <= r["n_initial"]]
    if developed:
        first = developed[0]
        text = f"Edge of chaos on this grid: p >= {p_high:g} % first at eta = {first['eta']:g}"
        if first["stuck_at_chance"]:
            text += (f", where {first['stuck_at_chance']} of {first['n_initial']} networks end stuck at chance "
                     "accuracy (sensitivity without learning)")
    else:
        text = f"p never reaches {p_high:g} % on this grid"
    calm = [r for r in rows if r["reached_percent"] > 0 and r["diverged_fraction"] <= MOSTLY]
    if calm:
        best = min(calm, key=lambda r: r["tau_rmst"])
        median = (f"median > {best['tau_horizon']}" if np.isinf(best["tau_median"])
                  else f"median {best['tau_median']:.3g}")
        held = f" held {hold} epochs" if hold > 1 else ""
        interval = (f"[95 % CI {best['tau_rmst_ci_low']:.3g}, {best['tau_rmst_ci_high']:.3g}]"
                    if np.isfinite(best["tau_rmst_ci_low"]) else "(no interval: every network took as long)")
        text += (f". Fastest training to {target:.0%}{held}: eta = {best['eta']:g}, restricted mean "
                 f"{best['tau_rmst']:.3g} epochs {interval} up to epoch {best['tau_horizon']} ({median}; "
                 f"{best['reached_percent']:.0f} % of networks reached the target)")
        close = [r for r in calm if r is not best and r["tau_rmst_ci_low"] <= best["tau_rmst_ci_high"]]
        text += ("; its interval overlaps those of eta = " + ", ".join(f"{r['eta']:g}" for r in close) + "."
                 if close else ".")
    else:
        text += f". No network reached {target:.0%} at any learning rate where most did not diverge."
    unresolved = [r for r in rows if r.get("n_unresolved")]
    if unresolved:
        text += (" At eta = " + ", ".join(f"{r['eta']:g} ({r['n_unresolved']} of {r['n_initial']})" for r in unresolved)
                 + " the distances rose by a factor of more than e^5 within 5 records: the exponential phase is too "
                 "short for the records, so lambda_NMLE and p are not measured there (record more often: with "
                 "minibatches, training.records_per_epoch).")
    stuck = [r for r in rows if r["stuck_at_chance"] * 2 > r["n_initial"] and r["p_percent"] > 0]
    if stuck:
        text += (" At eta = " + ", ".join(f"{r['eta']:g}" for r in stuck) + ": most networks end stuck at chance "
                 "accuracy while some exponents are positive: sensitivity there is not training.")
    lost = [r for r in rows if r["reached_then_stuck"]]
    if lost:
        text += (" At eta = " + ", ".join(f"{r['eta']:g} ({r['reached_then_stuck']} of {r['n_initial']})"
                                          for r in lost)
                 + " networks reached the target and then ended at chance accuracy"
                 + (": first passage counts them as trained; training.target_hold = k asks for the target to hold k "
                    "epochs." if hold == 1 else f", although they held it {hold} epochs."))
    return text


HEADERS = ("eta", "lambda_NMLE ± std", "lambda 95 % CI", "p % [CI]", "reached % [CI]", "median tau [CI]",
           "restricted mean tau [CI]", "<tau> reached only (paper)", "at chance (T)", "diverged", "test accuracy (T)")


def _table(rows) -> str:
    if not rows:
        return "<p>No learning rate is finished yet.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cells(r: dict) -> list[str]:
    """One table row: three significant figures, intervals in brackets."""
    horizon = r["tau_horizon"]

    def tau(v):
        return f"> {horizon}" if np.isinf(v) else _cell(v)

    n = r["n_initial"]
    return [_cell(r["eta"]), f"{_fixed(r['lambda_nmle'])} ± {_fixed(r['lambda_std'])}",
            f"[{_fixed(r['lambda_ci_low'])}, {_fixed(r['lambda_ci_high'])}]",
            (f"{r['p_percent']:.0f} [{r['p_ci_low']:.0f}, {r['p_ci_high']:.0f}]" if np.isfinite(r["p_percent"])
             else "–") + (f" ({r['n_unresolved']} unresolved)" if r.get("n_unresolved") else ""),
            f"{r['reached_percent']:.0f} [{r['reached_ci_low']:.0f}, {r['reached_ci_high']:.0f}]",
            f"{tau(r['tau_median'])} [{tau(r['tau_median_ci_low'])}, {tau(r['tau_median_ci_high'])}]",
            f"{_cell(r['tau_rmst'])} [{_cell(r['tau_rmst_ci_low'])}, {_cell(r['tau_rmst_ci_high'])}]",
            _cell(r["tau_mean_reached"]) + (f" ({n - r['tau_censored']} of {n})" if r["tau_censored"] else ""),
            f"{r['stuck_at_chance']}/{n}", f"{r['diverged_fraction']:.0%}", _cell(r["final_test_accuracy_mean"])]


def _fixed(value: float) -> str:
    """Exponents per epoch to three decimals (a column of them reads at a glance; 4e-06 and 0.5 would not)."""
    text = "–" if not np.isfinite(value) else f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if not np.isfinite(value) else f"{value:.3g}"
    return str(value)
