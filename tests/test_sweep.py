import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from chaosgd.experiments.config import Config, ConfigError, Data, Ensemble, Model, Training
from chaosgd.experiments.executors import Execution
from chaosgd.experiments.plan import make_plan
from chaosgd.experiments.problem import tasks
from chaosgd.experiments.results import summarize
from chaosgd.experiments.store import RunDir
from chaosgd.experiments.sweep import sweep
from problems import descendants

FIELDS = ("loss", "train_accuracy", "test_accuracy", "distance", "diverged_at", "eta", "initial_condition")


def small_config(**changes):
    config = Config(name="tiny", data=Data("iris"), model=Model(hidden=(6,)),
                    ensemble=Ensemble(initial=5, copies=2), training=Training(etas=(0.1, 2.5, 10.0), epochs=30),
                    block=2)
    return config.with_values(**changes) if changes else config


def load_records(run_dir):
    return summarize(run_dir).records()


def assert_same(a, b):
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("serial")
    sweep(small_config(), run_dir, executor="serial", progress=False, log=lambda *a: None)
    return load_records(run_dir)


def test_tasks_cover_every_learning_rate_and_initial_condition():
    ts = tasks(small_config())
    assert len(ts) == 3 * 3 and sum(t.count for t in ts) == 3 * 5
    assert [(t.first, t.count) for t in ts[:3]] == [(0, 2), (2, 2), (4, 1)]


def test_serial_sweep_writes_every_task_and_summaries(tmp_path, reference):
    lines = []
    sweep(small_config(), tmp_path, executor="serial", progress=False, log=lines.append)
    assert len(list(RunDir(tmp_path).tasks_dir.glob("*.npz"))) == 9
    assert sum("lambda_NMLE" in line for line in lines) == 3           # one summary per learning rate
    assert RunDir(tmp_path).config_path.read_text() == small_config().to_toml()
    assert reference.loss.shape == (15, 3, 31)
    np.testing.assert_array_equal(reference.initial_condition, np.tile(np.arange(5), 3))


def test_processes_executor_gives_the_same_numbers(tmp_path, reference):
    lines = []
    sweep(small_config(), tmp_path, executor="processes", workers=2, progress=False, log=lines.append)
    assert_same(load_records(tmp_path), reference)
    assert sorted(line.split(":")[0] for line in lines[1:-1]) == ["eta = 0.1", "eta = 10", "eta = 2.5"]


def test_dask_local_cluster_gives_the_same_numbers(tmp_path, reference):
    pytest.importorskip("dask.distributed")
    sweep(small_config(), tmp_path, executor="dask", workers=2, progress=False, log=lambda *a: None)
    assert_same(load_records(tmp_path), reference)


def test_the_dask_executor_honours_retries_on_its_local_cluster():
    """A task whose worker died is run again by Dask's scheduler, up to its allowed failures: ``retries``."""
    pytest.importorskip("dask.distributed")
    from chaosgd.experiments.executors import open_executor

    pool = open_executor("dask", workers=1, retries=5)
    try:
        assert pool._cluster.scheduler.allowed_failures == 5
    finally:
        pool.close()


def test_a_dask_scheduler_without_workers_is_said_not_waited_on_in_silence(tmp_path, monkeypatch, capsys):
    pytest.importorskip("dask.distributed")
    import threading

    from dask.distributed import LocalCluster

    from chaosgd.experiments.executors import clear_stop, request_stop
    from chaosgd.experiments.sweep import Interrupted

    monkeypatch.setattr("chaosgd.experiments.executors.NO_WORKERS_SAY", 0.5)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        stopper = threading.Timer(4.0, request_stop)  # the user's Ctrl-C, once the message is out
        stopper.start()
        try:
            with pytest.raises(Interrupted):
                sweep(small_config(), tmp_path, executor="dask", scheduler=cluster.scheduler_address, progress=False,
                      log=lambda *a: None)
        finally:
            stopper.cancel()
            clear_stop()
    err = capsys.readouterr().err
    assert f"the Dask scheduler at {cluster.scheduler_address} has no workers" in err and "dask worker" in err


def test_resume_skips_finished_tasks_and_completes(tmp_path, reference):
    sweep(small_config(), tmp_path, executor="serial", progress=False, log=lambda *a: None)
    for path in sorted(RunDir(tmp_path).tasks_dir.glob("*.npz"))[::2]:
        path.unlink()
    half = RunDir(tmp_path).tasks_dir / ".eta000_ic00000.npz.0123456789ab.tmp"
    half.write_bytes(b"half a file")  # an interrupted write
    lines = []
    sweep(small_config(), tmp_path, executor="serial", progress=False, log=lines.append)
    assert "4 of 9 tasks already done" in lines[0]
    assert_same(load_records(tmp_path), reference)


def test_resuming_with_another_configuration_is_refused(tmp_path):
    RunDir(tmp_path).prepare(small_config())
    with pytest.raises(ConfigError, match="holds a run of another configuration .*; it differs in training.epochs = "
                                          "30 there, 31 here\\); resume it"):
        sweep(small_config(**{"training.epochs": 31}), tmp_path, executor="serial", progress=False)


def test_kill_9_mid_sweep_then_resume_equals_uninterrupted(tmp_path, reference):
    config_path = tmp_path / "tiny.toml"
    config_path.write_text(small_config().to_toml())
    run_dir = tmp_path / "run"
    script = ("import sys, chaosgd; from chaosgd.experiments.config import Config; "
              "from chaosgd.experiments.sweep import sweep; "
              "sweep(Config.load(sys.argv[1]), sys.argv[2], executor='serial', progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(config_path), str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(RunDir(run_dir).tasks_dir.glob("*.npz"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(RunDir(run_dir).tasks_dir.glob("*.npz")))
    assert 3 <= done < 9, "the sweep should have been killed midway"
    sweep(small_config(), run_dir, executor="serial", progress=False, log=lambda *a: None)
    assert_same(load_records(run_dir), reference)


def test_unknown_executor_is_refused_before_the_folder_is_made(tmp_path):
    with pytest.raises(ValueError, match="serial"):
        sweep(small_config(), tmp_path / "run", executor="threads")
    with pytest.raises(ValueError, match=r"workers must be an integer in \[1, 1024\]"):
        sweep(small_config(), tmp_path / "run", executor="processes", workers=0)
    with pytest.raises(ValueError, match="scheduler 'tcp://x:1': a scheduler address is for the dask executor, and "
                                         "the executor is 'serial'; choose the dask executor"):
        sweep(small_config(), tmp_path / "run", executor="serial", scheduler="tcp://x:1")
    with pytest.raises(ValueError, match="workers = 3: the serial executor runs one task at a time"):
        sweep(small_config(), tmp_path / "run", executor="serial", workers=3)  # (it would be ignored)
    with pytest.raises(ValueError, match="retries must be an integer >= 0; got -1"):
        sweep(small_config(), tmp_path / "run", retries=-1)
    assert not (tmp_path / "run").exists()


def test_a_bad_dask_scheduler_address_is_refused_naming_the_scheduler(tmp_path):
    dask = pytest.importorskip("dask.distributed") and __import__("dask")
    with pytest.raises(ValueError, match="scheduler 'notanaddress': not a Dask scheduler's address .*tcp://HOST:PORT"):
        sweep(small_config(), tmp_path / "run", executor="dask", scheduler="notanaddress")
    assert not (tmp_path / "run").exists()  # (refused before the plan)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):  # (port 9: nothing answers)
        with pytest.raises(ValueError, match="scheduler 'tcp://127.0.0.1:9': no Dask scheduler answers there"):
            Execution("dask", scheduler="tcp://127.0.0.1:9").open()


def test_an_execution_counts_the_processes_that_share_this_machines_memory(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert Execution().local_workers == 7 and Execution(workers=3).local_workers == 3
    assert Execution("serial").local_workers == 1 and Execution("dask", workers=2).local_workers == 2
    assert Execution("dask", scheduler="tcp://x:1").local_workers is None  # (they run on the scheduler's machines)


def test_a_plan_defaults_to_runs_by_name_and_refuses_a_file_before_loading_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = small_config(**{"data.name": "npz", "data.path": "absent.npz"})
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(ConfigError, match="taken exists and is not a folder"):
        make_plan(config, "taken")  # (before the missing data file is looked for)
    plan = make_plan(small_config(), execution=Execution("serial"))
    assert plan.run.root == tmp_path.joinpath("runs", "tiny").relative_to(tmp_path) and not plan.run.root.exists()
    assert plan.execution == Execution("serial")


def test_a_worker_killed_mid_task_does_not_lose_the_sweep(tmp_path, reference):
    import threading

    killed = []

    def kill_one_worker():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            for child in descendants(os.getpid()):
                cmdline = open(f"/proc/{child}/cmdline", "rb").read()
                if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
                    time.sleep(0.5)  # let it start a task
                    os.kill(child, signal.SIGKILL)
                    killed.append(child)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    sweep(small_config(), tmp_path, executor="processes", workers=2, progress=False, log=lambda *a: None)
    killer.join()
    assert killed, "no worker was found to kill"
    assert_same(load_records(tmp_path), reference)


def test_a_sweep_that_stops_references_keeps_its_times_to_target(tmp_path):
    from chaosgd.training_time import time_to_accuracy

    base = small_config(**{"training.epochs": 100, "training.target": 0.6})
    runs = {}
    for stop in (False, True):
        run_dir = tmp_path / str(stop)
        sweep(base.with_values(**{"training.stop_references": stop}), run_dir, executor="serial", progress=False,
              log=lambda *a: None)
        runs[stop] = load_records(run_dir)
    assert (runs[True].references_stopped_at >= 0).any() and (runs[False].references_stopped_at == -1).all()
    assert runs[True].network_epochs < runs[False].network_epochs
    np.testing.assert_array_equal(time_to_accuracy(runs[True].test_accuracy, 0.6).epoch,
                                  time_to_accuracy(runs[False].test_accuracy, 0.6).epoch)


def test_summary_from_the_plan_a_sweep_returns_equals_the_summary_read_back_from_its_folder(tmp_path):
    # The plan carries the checked results and fits down to the summary; reading the folder again must agree.
    plan = make_plan(small_config(), tmp_path, execution=Execution("serial"))
    # (its sizes were checked for one process's memory: three workers sharing it would not have been)
    with pytest.raises(ValueError, match=r"carries how its tasks run \(Execution\(executor='serial'.*\); "
                                         r"executor='processes', workers=3 would change it"):
        sweep(plan, executor="processes", workers=3, retries=2, progress=False)  # (retries: the plan's own)
    assert not RunDir(tmp_path).config_path.exists()
    sweep(plan, executor="serial", progress=False, log=lambda *a: None)  # (what the plan says: no change)
    assert plan.complete and len(plan.fits) == 3
    carried, read = summarize(plan), summarize(tmp_path)
    np.testing.assert_equal(carried.rows, read.rows)  # NaN where nothing resolved, in both
    assert carried.n_pending == read.n_pending == 0
    assert_same(carried.records(), read.records())
