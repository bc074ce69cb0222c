import csv
import re

import numpy as np
import pytest

from chaosgd.cli import main
from chaosgd.experiments.report import write_report
from chaosgd.experiments.results import summarize
from chaosgd.experiments.sweep import sweep
from test_sweep import load_records, small_config
from chaosgd.experiments.store import RunDir


def test_results_table_and_report_with_every_figure(tmp_path):
    sweep(small_config(), tmp_path, executor="serial", progress=False, log=lambda *a: None)
    rows = summarize(tmp_path).rows
    assert [r["eta"] for r in rows] == [0.1, 2.5, 10.0]
    assert all(0 <= r["p_percent"] <= 100 and r["n_initial"] == 5 for r in rows)
    assert all(r["tau_censored"] + (0 if np.isnan(r["tau_mean_reached"]) else 1) >= 1 for r in rows)
    assert all(r["tau_rmst_ci_low"] <= r["tau_rmst"] <= r["tau_rmst_ci_high"] <= r["tau_horizon"]
               or (np.isnan(r["tau_rmst_ci_low"]) and r["reached_percent"] in (0, 100)) for r in rows)
    page = write_report(tmp_path).read_text()
    titles = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,", page)
    assert [t.split(":")[0] for t in titles] == ["Figure 1", "Figure 2", "Figure 3", "Figure 4", "Figure 5"]
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == 5 and all(len(c) > 80 for c in captions)  # every figure says what it draws
    assert "initial condition 0" in captions[1] and "red: its local exponent counts as positive" in captions[2]
    assert "one standard deviation" in captions[3] and "Censored, at eta" in captions[4]
    eta = float(re.search(r"Figure 2: distances around one initial condition, eta = ([\d.]+)", page).group(1))
    with_p = [r for r in rows if r["p_percent"] >= 50]
    assert eta == (with_p[0]["eta"] if with_p else max(rows, key=lambda r: r["p_percent"])["eta"])
    assert "restricted mean tau [CI]" in page and "results.csv" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing to fetch
    with open(RunDir(tmp_path).csv_path) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 and float(table[2]["eta"]) == 10.0


def test_report_of_an_unfinished_run_says_so(tmp_path):
    sweep(small_config(), tmp_path, executor="serial", progress=False, log=lambda *a: None)
    for path in RunDir(tmp_path).tasks_dir.glob("eta002_*.npz"):
        path.unlink()
    page = write_report(tmp_path).read_text()
    assert "3 pending" in page and len(summarize(tmp_path).rows) == 2
    # Its conclusions are of the finished learning rates only, and say so.
    assert "<b>Provisional, from 2 of 3 learning rates (pending: eta = 10): " in page
    assert "on this grid" not in page


def test_cli_sweep_report_and_reproduce(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(small_config().to_toml())
    run_dir = tmp_path / "run"
    assert main(["sweep", str(config), "--out", str(run_dir), "--executor", "serial", "--quiet",
                 "--set", "training.epochs=12", "--set", "training.etas=[0.5, 5.0]"]) == 0
    assert len(list(RunDir(run_dir).tasks_dir.glob("*.npz"))) == 6
    assert capsys.readouterr().out.strip().endswith("report.html")  # the sweep's last line names its report
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.html")
    # The same folder with another configuration is refused with a message, not a traceback.
    assert main(["sweep", str(config), "--out", str(run_dir), "--executor", "serial", "--quiet"]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert main(["reproduce", "iris", "--quick", "--out", str(tmp_path / "iris"), "--executor", "serial",
                 "--quiet", "--set", "training.epochs=15", "--set", "training.etas=[0.1, 10.0]",
                 "--set", "ensemble.initial=4"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("report.html") and "toy map" in out
    assert (tmp_path / "iris" / "toymap" / "fig6_orbit_diagram.png").is_file()
    assert main(["sweep", "mnist-tahn"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_records_and_results_load_into_xarray_and_pandas(tmp_path):
    import pandas as pd
    sweep(small_config(), tmp_path, executor="serial", progress=False, log=lambda *a: None)
    data = load_records(tmp_path).to_xarray()
    assert dict(data["distance"].sizes) == {"group": 15, "perturbed": 2, "epoch": 31}
    assert float(data["eta"].isel(group=14, copy=0)) == 10.0
    write_report(tmp_path)
    table = pd.read_csv(RunDir(tmp_path).csv_path)
    assert list(table["eta"]) == [0.1, 2.5, 10.0]
    parquet = pd.read_parquet(tmp_path / "results.parquet")  # the same table, typed
    pd.testing.assert_frame_equal(parquet, table, check_dtype=False)
    assert str(parquet["network_epochs"].dtype) == "int64" and str(parquet["p_percent"].dtype) == "float64"


def test_asking_for_a_gpu_where_there_is_none_is_an_error_message(tmp_path, capsys):
    import subprocess
    import sys

    import jax
    import jax.flatten_util
    import pytest
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU: there is nothing to refuse")
    result = subprocess.run([sys.executable, "-m", "chaosgd.cli", "sweep", "iris", "--quick", "--device", "gpu",
                             "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "jax[cuda12]" in result.stderr


def test_a_gpu_run_keeps_the_cpu_for_the_engines_host_callbacks(monkeypatch):
    """--device gpu once pinned JAX to CUDA alone, and the progress callback inside the training scan then failed on
    the GPU ("failed to find a local CPU device"): the GPU comes first, the CPU stays listed."""
    import jax

    from chaosgd.experiments.executors import Execution

    chosen = []
    monkeypatch.setenv("JAX_PLATFORMS", "")
    monkeypatch.setattr(jax.config, "update", lambda name, value: chosen.append((name, value)))
    gpu = type("Device", (), {"platform": "gpu"})()
    monkeypatch.setattr(jax, "devices", lambda *a: [gpu])  # (this machine has no GPU to ask)
    Execution(device="gpu").pin_device()
    import os
    assert chosen == [("jax_platforms", "cuda,cpu")] and os.environ["JAX_PLATFORMS"] == "cuda,cpu"


def test_sharpness_tracked_in_a_sweep_gives_figure_14(tmp_path):
    import jax
    import jax.flatten_util

    from chaosgd.ensemble import initial_conditions
    from chaosgd.objective import classification
    from chaosgd.experiments.problem import build_model, dataset

    config = small_config(**{"training.sharpness_every": 10, "ensemble.initial": 3, "block": 3})
    sweep(config, tmp_path, executor="serial", progress=False, log=lambda *a: None)
    results = summarize(tmp_path).results.values()
    tracks = sorted((r.sharpness for r in results if r.sharpness is not None), key=lambda t: t.eta)
    assert [t.eta for t in tracks] == [0.1, 2.5, 10.0]  # one per learning rate, from initial condition 0
    assert all(list(t.epoch) == [0, 10, 20, 30] for t in tracks)
    # Independent check at epoch 0: the largest eigenvalue of the dense Hessian of initial condition 0.
    data = dataset(config.data)
    model = build_model(config.model, data)
    params = jax.tree_util.tree_map(lambda x: x[0], initial_conditions(model, 1, seed=config.ensemble.seed))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    loss = classification(model).loss
    hessian = jax.hessian(lambda v: loss(unravel(v), data.arrays())[0])(flat)
    assert tracks[0].value[0] == pytest.approx(np.linalg.eigvalsh(np.asarray(hessian)).max(), rel=1e-6)
    page = write_report(tmp_path).read_text()
    titles = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,", page)
    assert "Figure 14" in [t.split(":")[0] for t in titles]
    assert small_config().hash() != config.hash()


def test_edge_of_chaos_sentence_uses_the_restricted_mean_and_flags_stuck_networks():
    from chaosgd.experiments.report import edge_of_chaos

    def row(eta, p, rmst, reached, diverged=0.0, stuck=0, median=np.inf, lost=0, half=2):
        return {"eta": eta, "p_percent": p, "tau_rmst": rmst, "tau_rmst_ci_low": rmst - half,
                "tau_rmst_ci_high": rmst + half, "tau_median": median, "tau_horizon": 60, "reached_percent": reached,
                "diverged_fraction": diverged, "stuck_at_chance": stuck, "reached_then_stuck": lost, "n_initial": 10}

    # eta = 1: one network reached the target in 2 epochs, nine never did: the paper's <tau> would call it fastest.
    # eta = 20: every network touched the target at once, then diverged: never the fastest.
    rows = [row(0.1, 0, 60, 0), row(1, 60, 56.2, 10), row(5, 100, 20.0, 100, median=19),
            row(10, 100, 50.0, 30, stuck=7, lost=3), row(20, 100, 2.0, 100, diverged=1.0)]
    text = edge_of_chaos(rows, 0.9)
    assert "first at eta = 5." in text and "eta = 5, restricted mean 20 epochs [95 % CI 18, 22] up to epoch 60" in text
    assert "median 19; 100 % of networks reached the target)." in text  # no other interval overlaps [18, 22]
    assert "At eta = 10: most networks end stuck at chance accuracy" in text
    assert "At eta = 10 (3 of 10) networks reached the target and then ended at chance accuracy" in text
    assert "training.target_hold" in text and "training.target_hold" not in edge_of_chaos(rows, 0.9, hold=3)
    wide = rows[:2] + [row(5, 100, 20.0, 100, median=19, half=40)]
    assert "its interval overlaps those of eta = 1." in edge_of_chaos(wide, 0.9)
    assert "never reaches 95" in edge_of_chaos(rows[:2], 0.9)
    assert "No network reached 90%" in edge_of_chaos([row(1, 100, 60, 0, stuck=10)], 0.9)
    onset_stuck = edge_of_chaos([row(1, 100, 60, 0, stuck=10)], 0.9)
    assert "where 10 of 10 networks end stuck at chance accuracy" in onset_stuck


def test_networks_stuck_at_chance_and_censored_times_in_a_row():
    from chaosgd.experiments.config import Config, Data
    from chaosgd.experiments.results import fit
    from chaosgd.records import Records

    s, m, t = 4, 1, 10
    acc = np.full((s, t + 1), 1 / 3)               # Iris: three classes, chance 1/3
    acc[1, -1] = 0.38                                # within the margin of 0.05: stuck
    acc[2, -1] = 0.40                                # beyond it: not stuck
    acc[3, 5:] = 0.95                                # reaches 90 % at epoch 5
    distance = 1e-8 * np.exp(0.3 * np.arange(t + 1)) * np.ones((s, m, 1))
    records = Records.from_arrays({
        "eta": np.ones((s, 1 + m)), "initial_condition": np.arange(s), "loss": np.ones((s, 1 + m, t + 1)),
        "train_accuracy": np.ones((s, 1 + m, t + 1)), "test_accuracy": acc, "distance": distance,
        "diverged_at": np.full((s, 1 + m), -1)})
    row = fit(records, Config(data=Data("iris")))[0]
    assert row["stuck_at_chance"] == 2 and row["tau_censored"] == 3 and row["reached_percent"] == 25
    assert row["reached_then_stuck"] == 0
    assert np.isinf(row["tau_median"]) and row["tau_mean_reached"] == 5  # the paper's <tau> sees one network
    assert row["tau_rmst"] == pytest.approx((5 + 3 * 10) / 4) and row["tau_horizon"] == 10
    held = fit(records, Config(data=Data("iris")).with_values(**{"training.target_hold": 7}))[0]
    assert held["tau_censored"] == 4 and held["tau_horizon"] == 4  # 7 epochs at 95 % do not fit after epoch 5


def test_rows_go_up_in_eta_whatever_the_order_of_the_grid(tmp_path):
    from chaosgd.experiments.report import edge_of_chaos
    config = small_config(**{"training.etas": (10.0, 0.1), "ensemble.initial": 2, "training.epochs": 40})
    sweep(config, tmp_path, executor="serial", progress=False, log=lambda *a: None)
    rows = summarize(tmp_path).rows
    assert [r["eta"] for r in rows] == [0.1, 10.0]
    assert edge_of_chaos(rows, 0.9).startswith(("Edge of chaos on this grid: p >= 95 % first at eta = 10",
                                                "p never reaches"))


def test_a_finished_run_is_re_analysed_with_a_held_target_without_training_again(tmp_path, capsys):
    from chaosgd.training_time import time_to_accuracy

    run = tmp_path / "<img src=x onerror=alert(1)>"  # any text a user gives (here a folder name) is escaped
    sweep(small_config(), run, executor="serial", progress=False, log=lambda *a: None)
    own = write_report(run).read_bytes()
    stamps = {p.name: p.stat().st_mtime_ns for p in RunDir(run).tasks_dir.iterdir()}
    assert main(["report", str(run), "--set", "training.target_hold=3", "--out", str(tmp_path / "held")]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith(str(RunDir(tmp_path / "held").report_path)) and "re-analysis of" in out
    with open(RunDir(tmp_path / "held").csv_path) as f:
        held = list(csv.DictReader(f))
    records = summarize(run).records()
    for row in held:  # independent of the report: the held passages counted straight from the records
        mine = records.select(records.eta[:, 0] == float(row["eta"]))
        assert int(row["tau_censored"]) == time_to_accuracy(mine.test_accuracy, 0.9, hold=3).n_censored
        assert int(row["tau_horizon"]) == 30 - 3 + 1
    page = RunDir(tmp_path / "held").report_path.read_text()
    assert "Re-analysis" in page and "training.target_hold = 3 (the run: 1)" in page and "held 3 consecutive" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    any_reached = any(float(r["reached_percent"]) > 0 and float(r["diverged_fraction"]) <= 0.5 for r in held)
    assert ("Fastest training to 90% held 3 epochs" if any_reached else "No network reached 90%") in page
    assert RunDir(run).report_path.read_bytes() == own  # the run's own files are untouched, nothing retrained
    assert {p.name: p.stat().st_mtime_ns for p in RunDir(run).tasks_dir.iterdir()} == stamps
    # Settings that shaped the records are refused, naming those that can change; a re-analysis needs its folder.
    assert main(["report", str(run), "--set", "ensemble.copies=3", "--out", str(tmp_path / "x")]) == 2
    assert "can be re-analysed only with other values of training.target" in capsys.readouterr().err
    assert main(["report", str(run), "--set", "training.target_hold=3"]) == 2
    assert "needs its own folder (--out DIR)" in capsys.readouterr().err
    for inside in (run, RunDir(run).tasks_dir, run / "sub"):
        assert main(["report", str(run), "--set", "training.target_hold=3", "--out", str(inside)]) == 2
        assert "is the run folder or inside it" in capsys.readouterr().err
    other = tmp_path / "other"
    sweep(small_config(**{"training.etas": (0.5,)}), other, executor="serial", progress=False, log=lambda *a: None)
    assert main(["report", str(run), "--set", "training.target_hold=3", "--out", str(other)]) == 2
    assert "holds a run of its own" in capsys.readouterr().err and not RunDir(other).report_path.exists()
    assert main(["report", str(run), "--set", "training.target_hold=3", "--out", str(other / "sub")]) == 2
    assert "lies inside the run folder" in capsys.readouterr().err and not (other / "sub").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["report", str(run), "--set", "training.target_hold=3", "--out", str(tmp_path / "afile")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert main(["report", str(run), "--set", "training.target_hold=3", "--set", "training.target_hold=4", "--out",
                 str(tmp_path / "z")]) == 2
    assert "given twice" in capsys.readouterr().err
    stopped = small_config(**{"training.stop_references": True, "training.etas": (0.5,)})
    sweep(stopped, tmp_path / "stopped", executor="serial", progress=False, log=lambda *a: None)
    assert main(["report", str(tmp_path / "stopped"), "--set", "training.target=0.95", "--out",
                 str(tmp_path / "y")]) == 2
    assert "stopped its references" in capsys.readouterr().err


def test_a_float32_run_reports_at_its_grid_learning_rates(tmp_path):
    config = small_config(**{"model.dtype": "float32", "ensemble.epsilon": 1e-3, "training.etas": (0.1, 2.5),
                             "ensemble.initial": 2})
    sweep(config, tmp_path, executor="serial", progress=False, log=lambda *a: None)
    assert [r["eta"] for r in summarize(tmp_path).rows] == [0.1, 2.5]  # not float32's 0.10000000149
    page = write_report(tmp_path).read_text()
    assert "Figure 2" in page and "Figure 1" in page
