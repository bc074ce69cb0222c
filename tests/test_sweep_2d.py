"""Sweeps over eta and a second axis, and the minibatch and optimiser fields, through the experiment layer."""

import csv

import numpy as np
import pytest

from chaosgd.cli import main
from chaosgd.experiments.config import ConfigError
from chaosgd.experiments.problem import tasks
from chaosgd.experiments.report import write_report
from chaosgd.experiments.results import summarize
from chaosgd.experiments.search import config_evaluator, stored_evaluations
from chaosgd.experiments.store import RunDir
from chaosgd.experiments.sweep import sweep
from test_sweep import assert_same, small_config

QUIET = {"executor": "serial", "progress": False, "log": lambda *a: None}


def momentum_grid(**changes):
    # 4 initial conditions in blocks of 2: tasks of one shape, one compiled program for each point.
    return small_config(**{"training.optimizer": "momentum", "training.axis": "training.momentum",
                           "training.axis_values": (0.0, 0.5), "training.etas": (0.1, 2.5), "training.batch_size": 40,
                           "ensemble.initial": 4, **changes})


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    sweep(momentum_grid(), folder, **QUIET)
    return folder


def test_tasks_of_a_grid_are_named_by_their_point():
    every = tasks(momentum_grid())
    assert len(every) == 2 * 2 * 2 and every[0].name == "x000_eta000_ic00000" and every[-1].point == 1
    assert "point" not in tasks(small_config())[0].identity()   # 1-D task files keep their identity


def test_a_grid_equals_its_one_dimensional_sweeps(tmp_path, grid_run):
    grid = summarize(grid_run)
    assert len(grid.rows) == 4
    for j, (value, point) in enumerate(momentum_grid().points):
        sweep(point, tmp_path / f"line{j}", **QUIET)
        line = summarize(tmp_path / f"line{j}")
        assert_same(grid.records(point=j), line.records())
        mine = [r for r in grid.rows if r["training.momentum"] == value]
        for a, b in zip(mine, line.rows):
            assert {k: v for k, v in a.items() if k != "training.momentum"} == pytest.approx(b, nan_ok=True)
        assert np.all(line.records().steps_per_epoch == 3)   # 120 Iris examples in batches of 40


def test_the_grid_report_has_heatmaps_and_the_csv_its_axis(grid_run):
    report = write_report(grid_run).read_text()
    assert "p, lambda_NMLE and the time to target over eta and training.momentum" in report
    assert "Results by learning rate at training.momentum = 0.5" in report
    assert "Training: momentum, minibatches of 40 examples" in report
    with open(RunDir(grid_run).csv_path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["training.momentum", "eta"] and len(rows) == 4


def test_commands_that_measure_one_point_refuse_a_grid(grid_run, capsys):
    with pytest.raises(ConfigError, match="sweet-spot search takes one configuration"):
        config_evaluator(momentum_grid())
    search = config_evaluator(momentum_grid().at(0.5), epochs=20)
    try:
        with pytest.raises(ConfigError, match="2-D sweep"):
            stored_evaluations(grid_run, search)
    finally:
        search.close()
    assert main(["lyapunov", "iris", "--set", "training.optimizer=momentum", "--set", "training.axis=training.momentum",
                 "--set", "training.axis_values=0,0.5", "--out", str(grid_run.parent / "lyap")]) == 2
    assert "lyapunov measures one configuration" in capsys.readouterr().err
    assert not (grid_run.parent / "lyap").exists()
    assert main(["report", str(grid_run), "--eta", "2.5"]) == 2
    assert "--eta chooses the learning rate of figures 2 and 3" in capsys.readouterr().err
    assert main(["lyapunov", "iris", "--estimator", "tangent", "--set", "training.batch_size=30", "--set",
                 "training.shared_noise=false", "--out", str(grid_run.parent / "tan")]) == 2
    assert "the tangent estimator linearises the training map of one network" in capsys.readouterr().err


def test_run_prints_the_second_axis_beside_each_row(tmp_path, capsys):
    assert main(["run", "iris", "--set", "training.optimizer=momentum", "--set", "training.axis=training.momentum",
                 "--set", "training.axis_values=0,0.5", "--set", "training.etas=0.1,2.5", "--set",
                 "ensemble.initial=3", "--set", "training.epochs=20", "--executor", "serial", "--quiet", "--out",
                 str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "a 2-D sweep: each row at the training.momentum of its first column" in out
    assert any(line.split()[:2] == ["0.5", "2.5"] for line in out.splitlines())


def test_a_reused_sweep_of_another_optimiser_is_refused(tmp_path):
    plain = small_config(**{"training.etas": (2.5,)})
    sweep(plain, tmp_path / "gd", **QUIET)
    adam = plain.with_values(**{"training.optimizer": "adam"})
    search = config_evaluator(adam, epochs=plain.training.epochs)
    try:
        with pytest.raises(ConfigError, match="training.optimizer \\('gd' there, 'adam' here\\)"):
            stored_evaluations(tmp_path / "gd", search)
    finally:
        search.close()


def test_records_within_epochs_through_a_grid_over_batch_sizes(tmp_path):
    """records_per_epoch = 3 over batches of 40 and 20 (3 and 6 steps an epoch) and the full batch (one step, so
    one record): the results say how finely each point was recorded, and times to target come in thirds of an
    epoch; a divisor that does not fit a point is refused before anything runs."""
    config = small_config(**{"training.optimizer": "sgd", "training.axis": "training.batch_size",
                             "training.axis_values": (40.0, 20.0, 0.0), "training.etas": (0.5,),
                             "training.records_per_epoch": 3, "training.target": 0.6, "ensemble.initial": 4})
    sweep(config, tmp_path / "grid", **QUIET)
    summary = summarize(tmp_path / "grid")
    by_batch = {r["training.batch_size"]: r for r in summary.rows}
    assert {b: r["records_per_epoch"] for b, r in by_batch.items()} == {40: 3, 20: 3, 0: 1}
    assert {b: r["steps_per_epoch"] for b, r in by_batch.items()} == {40: 3, 20: 6, 0: 1}
    for j, batch in enumerate(config.training.axis_values):
        row, records = by_batch[batch], summary.records(point=j)
        assert records.loss.shape[-1] == row["records_per_epoch"] * config.training.epochs + 1
        reached = row["tau_median"]
        assert np.isinf(reached) or (3 * reached).is_integer()
        assert row["tau_median_steps"] == reached * row["steps_per_epoch"]
    with pytest.raises(ConfigError, match=r"records_per_epoch: records per epoch must divide the 3 step\(s\) of "
                                          r"an epoch \(batch size 40, 120 training examples\).*one of 1, 3; got 4"):
        sweep(config.with_values(**{"training.records_per_epoch": 4}), tmp_path / "bad", **QUIET)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match=r"batches of 200 hold the whole training set of 120 examples"):
        sweep(small_config(**{"training.batch_size": 200, "training.records_per_epoch": 2}), tmp_path / "one",
              **QUIET)
    with pytest.raises(ConfigError, match=r"batches of 200 hold the whole training set"):   # not a batch-size axis
        sweep(small_config(**{"training.batch_size": 200, "training.records_per_epoch": 2, "training.axis":
                              "training.l2", "training.axis_values": (0.0, 0.001)}), tmp_path / "two", **QUIET)
