"""Sizes refused from the configuration alone: before a run folder, a task list or any parameters exist."""

import pytest

from chaosgd.engine import BudgetError
from chaosgd.experiments import Config, ConfigError, sweep
from chaosgd.experiments.config import Data, Ensemble, Model, Training
from chaosgd.experiments.problem import check_size

TINY = Config(name="tiny", data=Data("iris"), model=Model(hidden=(6,)), ensemble=Ensemble(initial=4, copies=2),
              training=Training(etas=(0.1, 1.0), epochs=10), block=2)


@pytest.mark.parametrize("field, value, words", [
    ("ensemble.seed", 2**63, "[0, 2^63 - 1]"),
    ("data.seed", 2**64 + 5, "[0, 2^63 - 1]"),
    ("ensemble.initial", 2**31, "[1, 2^31 - 1]"),
    ("ensemble.copies", 2**40, "[1, 2^31 - 1]"),
    ("training.epochs", 2**31, "more records than a run can count"),
    ("ensemble.initial", 10**8, "more than a run folder holds"),
])
def test_counts_and_seeds_beyond_what_a_run_represents_are_refused_by_field(field, value, words):
    with pytest.raises(ConfigError) as error:
        TINY.with_values(**{field: value})
    assert str(error.value).startswith(field) and words in str(error.value)


def test_records_per_epoch_count_against_the_epochs():
    config = TINY.with_values(**{"training.batch_size": 10, "training.optimizer": "sgd"})
    config.with_values(**{"training.epochs": 2**20, "training.records_per_epoch": 2**10})
    with pytest.raises(ConfigError, match="x 2048 record"):
        config.with_values(**{"training.epochs": 2**21, "training.records_per_epoch": 2**11})


def test_tasks_of_a_second_axis_count_too():
    config = TINY.with_values(**{"training.axis": "training.l2", "training.axis_values": [0.0, 1e-4, 1e-3],
                                 "ensemble.initial": 10**5, "block": 1})
    assert config.training.axis == "training.l2"
    with pytest.raises(ConfigError, match="3 values of training.l2, make 1,200,000 tasks"):
        config.with_values(**{"training.etas": [0.1, 1.0, 10.0, 20.0]})


@pytest.mark.parametrize("field, value", [("model.hidden", [10**8]), ("ensemble.copies", 10**8),
                                          ("training.epochs", 10**8)])
def test_a_task_too_large_is_refused_before_its_folder_exists(tmp_path, field, value):
    with pytest.raises(BudgetError) as error:
        sweep(TINY.with_values(**{field: value}), tmp_path / "run", executor="serial", progress=False,
              log=lambda *a: None)
    message = str(error.value)
    assert "GiB" in message and "ensemble.copies" in message and "CHAOSGD_MEMORY_BUDGET" in message
    assert error.value.needed > error.value.budget
    assert not (tmp_path / "run").exists()


def test_the_budget_is_shared_by_the_workers_and_a_smaller_block_is_suggested(monkeypatch):
    config = TINY.with_values(**{"ensemble.initial": 50, "block": 50, "training.epochs": 4000})
    monkeypatch.setenv("CHAOSGD_MEMORY_BUDGET", "60e6")
    check_size(config)  # about 30 MB: fits alone
    with pytest.raises(BudgetError) as error:
        check_size(config, workers=4)
    message = str(error.value)
    assert "shared by 4 worker processes" in message and "from CHAOSGD_MEMORY_BUDGET" in message
    assert "fewer workers (--workers)" in message
    fits = int(message.split("block = ")[1].split(" ")[0])
    assert 1 <= fits < 50
    check_size(config.with_values(block=fits), workers=4)  # what it suggests fits
    with pytest.raises(BudgetError):
        check_size(config.with_values(block=fits + 1), workers=4)


@pytest.mark.parametrize("text", ["lots", "-1", "0", "nan", "inf"])
def test_a_memory_budget_variable_that_is_not_a_number_of_bytes_is_named(monkeypatch, text):
    monkeypatch.setenv("CHAOSGD_MEMORY_BUDGET", text)
    with pytest.raises(BudgetError, match=f"CHAOSGD_MEMORY_BUDGET='{text}' is not a memory budget"):
        check_size(TINY)
