"""Faults, as a user meets them: Ctrl-C and SIGTERM, kill -9, a task that fails, several jobs on one folder."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaosgd.experiments.executors import TaskFailed
from chaosgd.experiments.results import summarize
from chaosgd.experiments.sweep import sweep
from problems import descendants
from test_sweep import assert_same, load_records, small_config
from chaosgd.experiments.store import RunDir

faults = pytest.mark.faults  # subprocess tests of a few seconds each: `pytest -m faults` (.ci/run runs them)

# Long tasks (about a second per epoch here): a signal always arrives while a task is in flight.
SLOW = small_config(**{"model.hidden": (1024, 1024), "training.epochs": 400, "ensemble.initial": 4, "block": 2,
                       "training.stop_copies": False})


def start(args, tmp_path, name="job"):
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "chaosgd.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=tmp_path), tmp_path / f"{name}.log"


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def running(folder):
    """A task is in flight: its claim exists."""
    return any(RunDir(folder).claims_dir.glob("*.claim")) if RunDir(folder).claims_dir.is_dir() else False


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not read its status


def running_sweep(tmp_path, toml, executor):
    """A sweep of ``toml`` started in its own process group, once a task of it is in flight."""
    if executor == "dask":
        pytest.importorskip("dask.distributed")
    run = tmp_path / "run"
    workers = [] if executor == "serial" else ["--workers", "2"]  # (several are refused for serial)
    proc, log = start(["sweep", str(toml), "--out", str(run), "--executor", executor, *workers, "--quiet"], tmp_path)
    if not wait_for(lambda: running(run)):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(log.read_text())
    return proc, log, run


@pytest.fixture
def slow_toml(tmp_path):
    path = tmp_path / "slow.toml"
    path.write_text(SLOW.to_toml())
    return path


@faults
@pytest.mark.parametrize("executor", ["serial", "processes", "dask"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_a_sweep_within_10_s_with_one_line_on_resuming(tmp_path, slow_toml, executor,
                                                                               signum):
    if executor != "processes" and signum == signal.SIGTERM:
        pytest.skip("SIGTERM takes the same path as SIGINT; checked once, on the processes executor")
    proc, log, run = running_sweep(tmp_path, slow_toml, executor)
    try:
        time.sleep(1.0)  # inside a task's compiled scan
        children = descendants(proc.pid)
        sent = time.time()
        os.killpg(proc.pid, signum)  # a terminal sends Ctrl-C to the whole process group
        proc.wait(timeout=10)
        took = time.time() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 128 + signum, text
    assert took < 10 and "Traceback" not in text, text
    assert "run the same command again to resume" in text.splitlines()[-1]
    assert wait_for(lambda: not any(alive(p) for p in children), timeout=10), "workers outlived the sweep"
    assert not running(run)  # the claims were released


@faults
@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_kill_9_of_the_sweep_leaves_no_worker_behind(tmp_path, slow_toml, executor):
    proc, log, run = running_sweep(tmp_path, slow_toml, executor)
    try:
        workers = descendants(proc.pid)
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)  # the main process alone, as an out-of-memory killer would
        proc.wait()
        assert wait_for(lambda: not any(alive(p) for p in workers), timeout=10), "orphaned workers"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


@faults
def test_three_jobs_on_one_folder_compute_each_task_once(tmp_path):
    config = small_config(**{"block": 1, "training.epochs": 60})
    path = tmp_path / "tiny.toml"
    path.write_text(config.to_toml())
    run = tmp_path / "run"
    jobs = [start(["sweep", str(path), "--out", str(run), "--executor", "serial", "--quiet"], tmp_path, f"job{i}")
            for i in range(3)]
    for proc, log in jobs:
        assert proc.wait(timeout=300) == 0, log.read_text()
    computed = []
    for _, log in jobs:
        last = [line for line in log.read_text().splitlines() if "this call computed" in line]
        assert len(last) == 1 and "all 15 tasks are done" in last[0]
        computed.append(int(last[0].rsplit(" ", 1)[1]))
    assert sum(computed) == 15, computed  # each task once, between them
    assert summarize(run).n_pending == 0 and not list(RunDir(run).claims_dir.glob("*.claim"))
    sweep(config, tmp_path / "alone", executor="serial", progress=False, log=lambda *a: None)
    assert_same(load_records(run), load_records(tmp_path / "alone"))


def test_a_stale_claim_of_a_dead_job_is_taken_over_at_once(tmp_path):
    import json
    import socket

    config = small_config()
    run = tmp_path / "run"
    RunDir(run).claims_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (RunDir(run).claims_dir / "eta000_ic00000.claim").write_text(json.dumps({"host": socket.gethostname(),
                                                                     "pid": int(dead.stdout), "token": "x"}))
    lines = []
    sweep(config, run, executor="serial", progress=False, log=lines.append, wait_poll=0.1)
    assert "this call computed 9" in lines[-1]


@pytest.mark.parametrize("executor", ["serial", "processes"])
def test_a_failing_task_stops_the_sweep_at_once_and_keeps_what_finished(tmp_path, executor):
    run = tmp_path / "run"
    # (Long tasks where two workers run side by side, so the failure comes while the other still runs.)
    config = small_config(**({"training.epochs": 200} if executor == "processes" else {}))
    (RunDir(run).tasks_dir / "eta001_ic00000.npz").mkdir(parents=True)  # a write that cannot succeed
    with pytest.raises(TaskFailed, match=r"task eta001_ic00000 failed: IsADirectoryError.*\(traceback in .*"
                                         r"eta001_ic00000\.error\.txt\)"):
        sweep(config, run, executor=executor, workers=2 if executor == "processes" else None, progress=False,
              log=lambda *a: None)
    assert "Traceback" in (RunDir(run).tasks_dir / "eta001_ic00000.error.txt").read_text()
    kept = sorted(p.name for p in RunDir(run).tasks_dir.glob("*.npz") if p.is_file())
    before = ["eta000_ic00000.npz", "eta000_ic00002.npz", "eta000_ic00004.npz"]
    if executor == "serial":
        assert kept == before  # what finished is kept, nothing after the failure ran
    else:  # two workers: what ran beside the failing task may finish; the rest of the queue never starts
        assert set(kept) <= set(before) | {"eta001_ic00002.npz", "eta001_ic00004.npz"} and len(kept) >= 1
    assert not list(RunDir(run).claims_dir.glob("*.claim"))


@faults
def test_a_bad_data_file_stops_a_process_sweep_with_the_file_named(tmp_path, capsys):
    from chaosgd.cli import main

    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / f"{stem}.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    start_ = time.time()
    code = main(["sweep", "mnist-tanh", "--quick", "--data-dir", str(tmp_path / "data"), "--out",
                 str(tmp_path / "run"), "--executor", "processes", "--workers", "2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "train-images-idx3-ubyte.gz" in err and "chaosgd data fetch mnist" in err
    assert time.time() - start_ < 60 and "Traceback" not in err


def test_workers_share_the_memory_budget(monkeypatch):
    from chaosgd.experiments.workers import environment as worker_environment
    monkeypatch.setenv("CHAOSGD_MEMORY_BUDGET", "8000000000")
    with worker_environment(4):
        assert os.environ["CHAOSGD_MEMORY_BUDGET"] == "2000000000"
    assert os.environ["CHAOSGD_MEMORY_BUDGET"] == "8000000000"


def test_a_group_too_large_for_the_memory_budget_says_what_to_change(tmp_path, monkeypatch, capsys):
    from chaosgd.cli import main
    monkeypatch.setenv("CHAOSGD_MEMORY_BUDGET", "1000")
    assert main(["sweep", "iris", "--quick", "--out", str(tmp_path / "run"), "--executor", "serial",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "ensemble.copies" in err and "float32" in err and "Traceback" not in err


def test_a_stop_request_is_seen_even_if_its_keyboard_interrupt_was_lost(tmp_path):
    from chaosgd.experiments.executors import clear_stop, request_stop
    from chaosgd.experiments.sweep import Interrupted

    request_stop()  # what the command line's signal handler does besides raising KeyboardInterrupt
    try:
        with pytest.raises(Interrupted, match="run the same command again to resume"):
            sweep(small_config(), tmp_path / "run", executor="serial", progress=False, log=lambda *a: None)
    finally:
        clear_stop()
    assert not list(RunDir(tmp_path / "run").claims_dir.glob("*.claim"))


@pytest.mark.parametrize("args, message", [
    (["--data.name", "mnist", "--data.path", "/nonexistent"], "chaosgd data fetch mnist"),
    (["--model.architecture", "cnn"], "CNN"),
])
def test_a_configuration_that_cannot_run_is_refused_before_its_folder_exists(tmp_path, capsys, args, message):
    from chaosgd.cli import main
    assert main(["sweep", "iris", "--quick", "--out", str(tmp_path / "run"), "--executor", "serial", "--quiet",
                 *args]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_claims_must_outlive_their_heartbeat(tmp_path):
    from chaosgd.experiments.claims import Claims
    with pytest.raises(ValueError, match="claim_timeout must be a finite number of seconds over 20, .*; got 15"):
        Claims(tmp_path, timeout=15, heartbeat=10)
    with pytest.raises(ValueError, match="claim_timeout must be a finite number of seconds over 20, .*; got 5"):
        sweep(small_config(), tmp_path / "run", executor="serial", claim_timeout=5)
    with pytest.raises(ValueError, match="claim_timeout must be a finite number of seconds over 20, .*; got '300'"):
        sweep(small_config(), tmp_path / "run", executor="serial", claim_timeout="300")
    with pytest.raises(ValueError, match="claim_timeout must be a finite number of seconds over 20, .*; got inf"):
        sweep(small_config(), tmp_path / "run", executor="serial", claim_timeout=float("inf"))
    for poll in (float("nan"), float("inf"), 0):
        with pytest.raises(ValueError, match=f"wait_poll must be a number of seconds > 0 and finite; got {poll}"):
            sweep(small_config(), tmp_path / "run", executor="serial", wait_poll=poll)
    assert not (tmp_path / "run").exists()


def _square(x, progress=None):
    return x * x


def test_a_worker_that_died_before_it_got_a_task_costs_nothing_but_a_restart():
    from chaosgd.experiments.executors import ProcessExecutor

    executor = ProcessExecutor(2)
    executor._start()
    victim = next(iter(executor._pool._processes.values()))
    victim.kill()
    victim.join()
    items = iter([(f"t{i}", (i,)) for i in range(6)])
    results = {}
    try:
        executor.map(_square, lambda: next(items, None), lambda key, value: results.__setitem__(key, value))
    finally:
        executor.close()
    assert results == {f"t{i}": i * i for i in range(6)}
