"""``chaosgd report RUN``: one self-contained HTML file (figures embedded, tables, configuration, environment,
timings) that opens in a browser with no server. Every string that comes from the user is escaped."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from chaosgd.atomic import atomic_write
from chaosgd.experiments.results import COLUMNS, fit, loss_curves, summarize, write_csv, write_parquet
from chaosgd.experiments.store import RunDir


def _png(ax) -> str:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png", dpi=110)
    plt.close(ax.figure)
    return base64.b64encode(buffer.getvalue()).decode()


FIGURE_2_ETA = 10.0  # the paper's figures 2 and 3 show eta = 10


def write_report(run_dir: str | Path, *, lyapunov_eta: float = FIGURE_2_ETA, log=None, summary=None) -> Path:
    """Write ``run_dir/report.html`` and ``run_dir/results.csv`` (and ``results.parquet`` where pyarrow is
    installed) from the stored records; return the report's path.

    Figures: 1 (training loss at three eta), 4 (lambda_NMLE), 5 (p and <tau>), 2 and 3 at the grid's learning
    rate nearest ``lyapunov_eta``, 14 when sharpness was tracked (``training.sharpness_every``), and 6 and 7 when
    ``run_dir/toymap`` holds them (``chaosgd reproduce`` puts them there). Task files that cannot be trusted are
    left out, named in the report and, through ``log``, one line each. ``summary``: the run's ``summarize()``, when
    the caller has it already (it is not computed twice).
    """
    from chaosgd import plots

    if not (np.isfinite(lyapunov_eta) and lyapunov_eta > 0):
        raise ValueError(f"the learning rate of figures 2 and 3 must be finite and > 0; got {lyapunov_eta}")
    store = RunDir(run_dir)
    summary = summary or summarize(store)  # a caller that summarized the run already passes it
    for why in summary.problems.values():
        if log is not None:
            log(f"left out, cannot be trusted: {why}")
    config, rows = summary.config, summary.rows
    info = store.info()
    write_csv(rows, store.csv_path)
    write_parquet(rows, store.parquet_path)
    figures = []
    if rows:
        figures.append(("Figure 1: training loss", _png(plots.plot_training_loss(loss_curves(summary)))))
        figures.append(("Figure 4: network maximum Lyapunov exponent", _png(plots.plot_lambda_vs_eta(rows))))
        figures.append(("Figure 5: p and training time", _png(plots.plot_p_and_tau(rows))))
        done = [r["eta"] for r in rows]
        eta = done[int(np.argmin(np.abs(np.log(done) - np.log(lyapunov_eta))))]
        rec = summary.records(config.training.etas.index(eta))
        net = fit(rec, config)[1]
        figures.append((f"Figure 2: distances around one initial condition, eta = {eta:g}",
                        _png(plots.plot_distance(rec.distance[0], net.local[0], eta=eta))))
        figures.append((f"Figure 3: local exponents, eta = {eta:g}", _png(plots.plot_network_exponent(net, eta=eta))))

    tracks = sorted((r.sharpness for r in summary.results.values() if r.sharpness is not None), key=lambda t: t.eta)
    if tracks:
        figures.append(("Figure 14: sharpness along training (initial condition 0) against 2/eta",
                        _png(plots.plot_sharpness(tracks))))
    toy = store.toymap_dir
    for name, title in (("fig6_orbit_diagram.png", "Figure 6: orbit diagram of the toy map"),
                        ("fig7_lyapunov.png", "Figure 7: Lyapunov exponent of the toy map")):
        if (toy / name).is_file():
            figures.append((title, base64.b64encode((toy / name).read_bytes()).decode()))
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
        "pre{background:#f6f6f6;padding:1em;overflow:auto}img{max-width:100%}</style></head><body>",
        f"<h1>chaosgd report: {e(config.name)}</h1>",
        f"<p>Configuration hash {e(config.hash())}; {n_tasks - n_pending} of {n_tasks} "
        f"tasks finished" + (f" (<b>{n_pending} pending</b>: rerun the sweep to complete it)" if n_pending else "")
        + f". Compute: {seconds:.1f} s over {net_epochs:,} network-epochs, against {naive:,} for running every "
        f"network every epoch ({net_epochs / max(naive, 1):.0%}).</p>",
        f"<p><b>{e(edge_of_chaos(rows, config.training.target))}</b></p>",
        _problems(summary.problems),
        "<h2>Results by learning rate</h2>", _table(rows),
        "<p>lambda: network MLE and standard deviation of the local exponents, 95 % bootstrap CI of the mean; "
        f"p: percentage of initial conditions with R² &gt; {config.analysis.r2_min:g} and lambda &gt; "
        f"{config.analysis.lambda_min:g}; tau: epochs to {config.training.target:.0%} test accuracy over the initial "
        "conditions that reached it, with the number censored (not reached within the budget).</p>",
    ]
    for title, data in figures:
        parts += [f"<h2>{e(title)}</h2>", f"<img alt='{e(title)}' src='data:image/png;base64,{data}'>"]
    parts += ["<h2>Configuration</h2>", f"<pre>{e(config.to_toml())}</pre>",
              "<h2>Environment</h2>", f"<pre>{e(json.dumps(info, indent=2))}</pre>", "</body></html>"]
    return atomic_write(store.report_path, "\n".join(parts))


def _problems(problems: dict[str, str]) -> str:
    """The task files that could not be trusted, named, so nobody mistakes their learning rates for finished."""
    if not problems:
        return ""
    items = "".join(f"<li>{html.escape(why)}</li>" for why in problems.values())
    return (f"<p><b>{len(problems)} task file(s) could not be trusted</b> and were left out (their learning rates "
            f"count as unfinished; rerun the sweep to recompute them):</p><ul>{items}</ul>")


def edge_of_chaos(rows, target: float, p_high: float = 95.0) -> str:
    """One sentence for practitioners: where sensitivity is fully developed on this grid, and where training to the
    target was fastest (among learning rates where every initial condition reached it)."""
    if not rows:
        return "No learning rate is finished yet."
    developed = [r["eta"] for r in rows if r["p_percent"] >= p_high and r["diverged_fraction"] <= 0.5]
    text = (f"Edge of chaos on this grid: p >= {p_high:g} % first at eta = {developed[0]:g}" if developed else
            f"p never reaches {p_high:g} % on this grid")
    complete = [r for r in rows if r["tau_censored"] == 0 and np.isfinite(r["tau_mean"])]
    if complete:
        best = min(complete, key=lambda r: r["tau_mean"])
        text += (f"; fastest training to {target:.0%} (every initial condition reaching it) at eta = {best['eta']:g}, "
                 f"{best['tau_mean']:.1f} epochs on average.")
    else:
        text += f"; at no learning rate did every initial condition reach {target:.0%}."
    return text


def _table(rows) -> str:
    if not rows:
        return "<p>No learning rate is finished yet.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r[c])}</td>" for c in COLUMNS) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if not np.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))
