"""The run store trusts nothing it did not check: damaged, foreign or old task files are recomputed with the reason
said; a folder cannot be taken over by another configuration; a deleted config.toml is restored."""

import json
import shutil

import numpy as np
import pytest

from chaosgd.cli import main
from chaosgd.experiments.config import ConfigError
from chaosgd.experiments.problem import tasks
from chaosgd.experiments.report import write_report
from chaosgd.experiments.results import summarize
from chaosgd.experiments.store import RunDir, TaskFileError
from chaosgd.experiments.sweep import sweep
from test_sweep import assert_same, load_records, small_config


def quiet_sweep(config, folder, lines=None):
    return sweep(config, folder, executor="serial", progress=False,
                 log=lines.append if lines is not None else (lambda *a: None))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run folder, copied by each test that damages it."""
    folder = tmp_path_factory.mktemp("finished")
    quiet_sweep(small_config(), folder)
    return folder


@pytest.fixture
def run(finished, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    return folder


def damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flipped":  # one bit inside the stored arrays: the zip's CRC or our digest catches it
        data[len(data) // 3] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how, reason", [("truncated", "unreadable, truncated or corrupted"),
                                         ("flipped", "corrupted"), ("empty", "unreadable, truncated or corrupted")])
def test_a_damaged_task_file_is_named_recomputed_and_the_results_equal_the_original(run, finished, how, reason):
    target = RunDir(run).tasks_dir / "eta001_ic00002.npz"
    damage(target, how)
    summary = summarize(run)
    assert list(summary.problems) == ["eta001_ic00002"] and reason in summary.problems["eta001_ic00002"]
    assert [r["eta"] for r in summary.rows] == [0.1, 10.0]  # the damaged learning rate counts as unfinished
    page = write_report(run).read_text()
    assert "could not be trusted" in page and "eta001_ic00002.npz" in page
    lines = []
    quiet_sweep(small_config(), run, lines)
    assert any(line.startswith("recomputing eta001_ic00002.npz") and reason in line for line in lines)
    assert "this call computed 1" in lines[-1]
    assert_same(load_records(run), load_records(finished))


def test_arrays_changed_under_an_intact_zip_fail_the_digest(run):
    path = RunDir(run).tasks_dir / "eta000_ic00000.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["loss"] = arrays["loss"] + 1e-12  # a plausible-looking, silently wrong number
    np.savez(path, **arrays)
    with pytest.raises(TaskFileError, match="do not match its SHA-256 digest"):
        RunDir(run).load_task(tasks(small_config())[0], small_config().hash())


def test_a_file_of_another_task_or_another_configuration_is_not_taken(run, tmp_path):
    shutil.copy(RunDir(run).tasks_dir / "eta000_ic00000.npz", RunDir(run).tasks_dir / "eta000_ic00002.npz")
    other = small_config(**{"training.epochs": 31})
    quiet_sweep(other.with_values(**{"training.etas": (0.1,), "ensemble.initial": 2}), tmp_path / "other")
    other = RunDir(tmp_path / "other").tasks_dir
    shutil.copy(other / "eta000_ic00000.npz", RunDir(run).tasks_dir / "eta002_ic00000.npz")
    problems = summarize(run).problems
    assert "holds another task" in problems["eta000_ic00002"]
    assert "belongs to another configuration" in problems["eta002_ic00000"]


def test_a_file_from_before_task_headers_is_recomputed(run):
    from chaosgd.records import Records
    path = RunDir(run).tasks_dir / "eta000_ic00000.npz"
    Records.from_arrays(np.load(path)).save(path)  # records alone, as chaosgd 0.1 wrote them
    assert "older chaosgd" in summarize(run).problems["eta000_ic00000"]


def test_another_configuration_cannot_take_a_folder_over_even_without_run_json(run):
    other = small_config(**{"training.epochs": 31})
    RunDir(run).info_path.unlink()
    with pytest.raises(ConfigError, match="another configuration"):
        quiet_sweep(other, run)
    RunDir(run).config_path.unlink()  # the task files alone still name their configuration
    with pytest.raises(ConfigError, match="another configuration"):
        quiet_sweep(other, run)
    assert not RunDir(run).config_path.exists() and not RunDir(run).info_path.exists()  # refused before writing


def test_a_deleted_config_toml_is_restored_from_the_tasks_or_from_the_same_configuration(run, capsys):
    RunDir(run).config_path.unlink()
    assert summarize(run).config == small_config()  # restored from the hash-checked task files
    assert RunDir(run).config_path.read_text() == small_config().to_toml()
    RunDir(run).config_path.unlink()
    lines = []
    quiet_sweep(small_config(), run, lines)
    assert "was missing: written again" in lines[0] and "this call computed 0" in lines[-1]
    RunDir(run).config_path.write_text(small_config(**{"training.epochs": 31}).to_toml())  # edited by hand
    assert main(["report", str(run)]) == 2
    assert "does not match the run" in capsys.readouterr().err


def test_report_of_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no config.toml" in capsys.readouterr().err


def test_a_resumed_sweep_prints_every_finished_learning_rate(run):
    lines = []
    quiet_sweep(small_config(), run, lines)
    assert [line.split(":")[0] for line in lines[1:4]] == ["eta = 0.1", "eta = 2.5", "eta = 10"]


def test_task_files_carry_what_identifies_them(finished):
    with np.load(RunDir(finished).tasks_dir / "eta002_ic00004.npz") as z:
        header = json.loads(str(z["header"]))
    assert header["config_hash"] == small_config().hash()
    assert header["task"] == {"eta_index": 2, "eta": 10.0, "first": 4, "count": 1}
    assert header["matrix_product"] == "blas"  # the worker's route (chaosgd.gemm), as workers may differ
    digest = np.load(RunDir(finished).tasks_dir / "eta002_ic00004.npz")["digest"]
    assert header["seconds"] > 0 and len(str(digest)) == 64
    assert not list(finished.glob("**/*.tmp"))  # no temporary file is left behind


def test_of_two_configurations_started_at_once_on_a_new_folder_one_is_refused(tmp_path, monkeypatch):
    a, b = small_config(), small_config(**{"training.epochs": 31})
    store = RunDir(tmp_path / "run")
    # Job b looked before job a created run.json (both saw a new folder); a's run.json is then in place.
    monkeypatch.setattr(RunDir, "_recorded_hash", lambda self: None)
    store.prepare(a)
    with pytest.raises(ConfigError, match="another configuration"):
        store.prepare(b)
    assert RunDir(tmp_path / "run").info()["config_hash"] == a.hash()


def test_an_edited_config_toml_is_written_again_by_the_runs_own_configuration(run):
    RunDir(run).config_path.write_text(small_config(**{"training.epochs": 31}).to_toml())
    lines = []
    quiet_sweep(small_config(), run, lines)
    assert "did not match the run (edited?)" in lines[0] and "this call computed 0" in lines[-1]
    assert RunDir(run).config_path.read_text() == small_config().to_toml()


def test_an_edited_config_toml_without_run_json_is_refused_not_reported_as_unfinished(run, capsys):
    RunDir(run).config_path.write_text(small_config(**{"training.epochs": 31}).to_toml())
    RunDir(run).info_path.unlink()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "does not match the run's task files" in err and "Delete it to restore" in err
    RunDir(run).config_path.unlink()
    assert summarize(run).config == small_config() and summarize(run).n_pending == 0  # restored from the tasks


def test_a_run_json_that_is_not_chaosgds_is_a_message(run, capsys):
    RunDir(run).info_path.write_text("[]")
    assert main(["report", str(run)]) == 2
    assert "not a run.json written by chaosgd" in capsys.readouterr().err


def test_report_names_untrusted_files_on_the_terminal_and_refuses_a_bad_eta(run, capsys):
    damage(RunDir(run).tasks_dir / "eta001_ic00002.npz", "truncated")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "left out, cannot be trusted: eta001_ic00002.npz" in out and out.strip().endswith("report.html")
    for bad in ("nan", "-1"):
        assert main(["report", str(run), "--eta", bad]) == 2
        assert "must be finite and > 0" in capsys.readouterr().err


def _rewrite(path, **changes):
    """Rewrite a task file with some arrays changed and a digest that matches them (a forger's file)."""
    from chaosgd.experiments.store import _digest
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "digest"}
    arrays.update(changes)
    arrays["digest"] = np.array(_digest(arrays))
    np.savez(path, **arrays)


def test_the_digest_does_not_depend_on_how_numpy_prints(finished):
    task = tasks(small_config())[0]
    try:
        np.set_printoptions(formatter={"str_kind": lambda s: "x"}, threshold=3)
        RunDir(finished).load_task(task, small_config().hash())
    finally:
        np.set_printoptions(formatter=None, threshold=1000)


@pytest.mark.parametrize("header", ["not json", "[1, 2]", '{"format": 3}'])
def test_a_header_that_chaosgd_did_not_write_is_refused_not_a_crash(run, header, capsys):
    _rewrite(RunDir(run).tasks_dir / "eta000_ic00000.npz", header=np.array(header))
    assert "header is not one chaosgd writes" in summarize(run).problems["eta000_ic00000"]
    assert main(["report", str(run)]) == 0 and "left out" in capsys.readouterr().out


def test_a_foreign_task_file_cannot_restore_its_configuration_into_a_run(run, tmp_path):
    other = small_config(**{"training.epochs": 7, "training.etas": (0.1,), "ensemble.initial": 2})
    quiet_sweep(other, tmp_path / "other")
    other = RunDir(tmp_path / "other").tasks_dir
    shutil.copy(other / "eta000_ic00000.npz", RunDir(run).tasks_dir / "aaa.npz")  # sorts first
    RunDir(run).config_path.unlink()
    assert summarize(run).config == small_config()  # restored from the files that match run.json
    RunDir(run).config_path.unlink()
    RunDir(run).info_path.unlink()
    with pytest.raises(ConfigError, match="belong to different configurations"):
        summarize(run)


def test_run_json_says_which_matrix_product_the_machine_used(tmp_path, monkeypatch):
    RunDir(tmp_path / "blas").prepare(small_config())
    assert RunDir(tmp_path / "blas").info()["machine"]["matrix_product"] == "blas"  # a compiler is on this machine
    monkeypatch.setenv("CHAOSGD_GEMM", "xla")
    RunDir(tmp_path / "xla").prepare(small_config())
    assert RunDir(tmp_path / "xla").info()["machine"]["matrix_product"] == "xla"


def test_a_report_flags_tasks_that_took_different_matrix_product_routes(run, monkeypatch):
    lines = []
    write_report(run, log=lines.append)
    assert "Matrix products: blas in every task" in RunDir(run).report_path.read_text()
    assert not any("routes" in line for line in lines)
    store, config = RunDir(run), small_config()
    task = tasks(config)[0]
    kept = store.load_task(task, config.hash())
    monkeypatch.setattr("chaosgd.experiments.store._matrix_product", lambda: "xla")  # as a worker without a compiler
    store.write_task(config, task, kept.records, seconds=kept.seconds)
    assert store.load_task(task, config.hash()).matrix_product == "xla"
    lines.clear()
    write_report(run, log=lines.append)
    n = len(tasks(config))
    mixed = [line for line in lines if "different matrix-product routes" in line]
    assert len(mixed) == 1 and f"blas: {n - 1}, xla: 1 tasks" in mixed[0], lines
    page = RunDir(run).report_path.read_text()
    assert "different matrix-product routes" in page and "Matrix products:" not in page


def test_a_report_flags_tasks_computed_by_different_versions(run, monkeypatch):
    import jax
    lines = []
    write_report(run, log=lines.append)
    import chaosgd
    mine = f"chaosgd {chaosgd.__version__}, jax {jax.__version__}, numpy {np.__version__}"
    assert f"Versions: {mine} in every task" in RunDir(run).report_path.read_text()
    assert not any("versions" in line for line in lines)
    store, config = RunDir(run), small_config()
    task = tasks(config)[0]
    kept = store.load_task(task, config.hash())
    # As a run resumed after an upgrade: one task of another jax.
    monkeypatch.setattr("chaosgd.experiments.store._versions",
                        lambda: {"chaosgd": chaosgd.__version__, "jax": "0.9.0", "numpy": np.__version__})
    store.write_task(config, task, kept.records, seconds=kept.seconds)
    assert "jax 0.9.0" in store.load_task(task, config.hash()).versions
    lines.clear()
    write_report(run, log=lines.append)
    mixed = [line for line in lines if "different versions" in line]
    assert len(mixed) == 1 and f"{mine}: {len(tasks(config)) - 1}" in mixed[0] and "jax 0.9.0" in mixed[0], lines
    page = RunDir(run).report_path.read_text()
    assert "computed by different versions" in page and "Versions:" not in page


def test_an_edited_class_count_in_run_json_is_refused(run):
    info = json.loads(RunDir(run).info_path.read_text())
    info["n_classes"] = 7  # chance accuracy (stuck networks) would be computed against 1/7
    RunDir(run).info_path.write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="n_classes is 7, but iris has 3 classes"):
        summarize(run)


def test_an_edited_hash_in_run_json_is_blamed_on_run_json_not_on_the_configuration(run, capsys):
    info = json.loads(RunDir(run).info_path.read_text())
    info["config_hash"] = "deadbeefdeadbeef"
    RunDir(run).info_path.write_text(json.dumps(info))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "run.json does not match the run: its config_hash is deadbeefdeadbeef, but the task files and " \
           f"config.toml say {small_config().hash()}: run.json was edited or damaged. Delete it" in err
    with pytest.raises(ConfigError, match="run.json was edited or damaged"):  # (the sweep of the same one, too)
        quiet_sweep(small_config(), run)
    RunDir(run).info_path.unlink()  # as the message says: the run is whole again
    lines = []
    quiet_sweep(small_config(), run, lines)
    assert "this call computed 0" in lines[-1] and RunDir(run).info()["config_hash"] == small_config().hash()


def test_no_run_is_made_inside_another_run(run, tmp_path):
    from chaosgd.experiments.plan import make_plan
    for inside in (RunDir(run).tasks_dir, run / "claims", run / "sub" / "deeper"):
        with pytest.raises(ConfigError, match=f"lies inside the run folder {run}; name a folder outside any run"):
            make_plan(small_config(**{"training.epochs": 5}), inside)
    assert not (run / "sub").exists()


def test_the_run_layout_on_disk_is_the_documented_one(tmp_path):
    """Run folders written by earlier versions must stay readable: the names are fixed here, once; every other
    test goes through RunDir."""
    run = RunDir(tmp_path)
    assert {name: getattr(run, name).relative_to(tmp_path).as_posix() for name in
            ("config_path", "info_path", "tasks_dir", "claims_dir", "report_path", "csv_path", "parquet_path",
             "toymap_dir")} == {"config_path": "config.toml", "info_path": "run.json", "tasks_dir": "tasks",
                                "claims_dir": "claims", "report_path": "report.html", "csv_path": "results.csv",
                                "parquet_path": "results.parquet", "toymap_dir": "toymap"}
    task = tasks(small_config())[0]
    assert run.task_path(task).relative_to(tmp_path).as_posix() == "tasks/eta000_ic00000.npz"
    assert run.error_path(task).relative_to(tmp_path).as_posix() == "tasks/eta000_ic00000.error.txt"
