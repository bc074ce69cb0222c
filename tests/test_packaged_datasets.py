"""The data sets other packages ship (scikit-learn's bundled UCI copies): loaded by name, split, checked, configured."""

import sys

import numpy as np
import pytest

from chaosgd.datasets import CLASSES, DATASETS, PACKAGED, MissingExtraError, load
from chaosgd.experiments.config import Config, ConfigError

sklearn_datasets = pytest.importorskip("sklearn.datasets")

# name: (examples, example shape, classes, test examples: round(0.2 x class size) per class)
SIZES = {"sklearn:wine": (178, (13,), 3, 36), "sklearn:breast_cancer": (569, (30,), 2, 113),
         "sklearn:digits": (1797, (8, 8, 1), 10, 359)}


def test_every_packaged_name_is_a_data_set_with_known_classes():
    assert set(PACKAGED) == set(SIZES)
    assert all(name in DATASETS and CLASSES[name] == SIZES[name][2] for name in SIZES)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_split_is_stratified_complete_and_of_the_documented_sizes(name):
    n, shape, classes, n_test = SIZES[name]
    data = load(name)
    assert data.name == name and data.n_classes == classes and data.example_shape == shape
    assert len(data.y_test) == n_test and len(data.y_train) == n - n_test
    assert data.x_train.dtype == np.float64 and data.y_train.dtype == np.int64
    # Each class's test share is its size x 20 %, rounded.
    y = np.concatenate([data.y_train, data.y_test])
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=classes),
                                  np.floor(0.2 * np.bincount(y) + 0.5).astype(int))
    # Train and test together are the whole data set, each example once.
    loader = getattr(sklearn_datasets, PACKAGED[name].loader)()
    both = np.concatenate([data.x_train, data.x_test]).reshape(n, -1) * PACKAGED[name].scale
    order = np.lexsort(both.T)
    reference = np.lexsort(loader.data.T)
    np.testing.assert_array_equal(both[order], loader.data[reference])
    np.testing.assert_array_equal(y[order], loader.target[reference])


def test_the_split_is_fixed_by_the_seed_and_changes_with_it():
    a, b, c = load("sklearn:wine", seed=0), load("sklearn:wine", seed=0), load("sklearn:wine", seed=1)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(np.sort(a.x_test, axis=0), np.sort(c.x_test, axis=0))
    # Wine's file is sorted by class; the training order is drawn, so the first examples hold every class.
    assert set(a.y_train[:20].tolist()) == {0, 1, 2}


def test_digits_are_images_with_pixels_in_the_unit_interval():
    data = load("sklearn:digits")
    assert data.x_train.shape[1:] == (8, 8, 1) and data.n_features == 64
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0 and data.x_test.max() <= 1.0
    images = sklearn_datasets.load_digits().images / 16.0
    assert any(np.array_equal(data.x_train[0, ..., 0], image) for image in images)


def test_standardize_applies_to_packaged_data():
    data = load("sklearn:breast_cancer", standardize=True)
    np.testing.assert_allclose(data.x_train.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=1e-9)


def test_without_scikit_learn_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn... now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingExtraError, match=r"scikit-learn is not installed: pip install 'chaosgd\[datasets\]'"):
        load("sklearn:digits")
    with pytest.raises(ImportError):  # (and a ValueError, which the command line reports as a message)
        load("sklearn:wine")


def test_an_unknown_packaged_name_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown data set 'sklearn:xyz'.*sklearn:wine.*sklearn:digits"):
        load("sklearn:xyz")
    with pytest.raises(ConfigError, match=r"data\.name: unknown data set 'sklearn:xyz'; choose one of .*"
                                          r"'sklearn:breast_cancer'"):
        Config.from_dict({"data": {"name": "sklearn:xyz"}})


def test_the_configuration_takes_packaged_names_and_refuses_a_path_with_them():
    from chaosgd.experiments.problem import dataset, n_classes

    config = Config.from_dict({"data": {"name": "sklearn:wine", "n_train": 30, "seed": 3}})
    assert Config.from_toml(config.to_toml()) == config  # the colon survives TOML
    assert n_classes(config.data) == 3
    data = dataset(config.data)
    assert len(data.y_train) == 30 and len(data.y_test) == 36
    np.testing.assert_array_equal(data.x_train, load("sklearn:wine", seed=3).x_train[:30])
    assert config.hash() != config.with_values(**{"data.seed": 4}).hash()
    with pytest.raises(ConfigError, match=r"data\.n_train: 500, but sklearn:wine has 142 training examples"):
        dataset(config.with_values(**{"data.n_train": 500}).data)
    with pytest.raises(ConfigError, match=r"data\.path: .*data set 'sklearn:digits' reads no file"):
        Config.from_dict({"data": {"name": "sklearn:digits", "path": "/somewhere"}})


def test_a_sweep_on_wine_from_the_command_line(tmp_path, capsys):
    from chaosgd.cli import main
    from chaosgd.experiments.results import summarize

    out = tmp_path / "wine"
    assert main(["sweep", "--data.name", "sklearn:wine", "--data.standardize", "true", "--model.hidden", "8",
                 "--training.etas", "0.1,1", "--ensemble.initial", "2", "--ensemble.copies", "1",
                 "--training.epochs", "5", "--executor", "serial", "--quiet", "--out", str(out)]) == 0
    summary = summarize(out)
    assert summary.config.data.name == "sklearn:wine" and summary.n_pending == 0
    assert [row["eta"] for row in summary.rows] == [0.1, 1.0]
    assert summary.records().loss.shape[0] == 4  # 2 learning rates x 2 initial conditions


def test_without_scikit_learn_the_command_line_says_which_extra(tmp_path, capsys, monkeypatch):
    from chaosgd.cli import main

    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["sweep", "--data.name", "sklearn:breast_cancer", "--training.etas", "1", "--ensemble.initial", "1",
                 "--ensemble.copies", "1", "--training.epochs", "2", "--executor", "serial", "--quiet", "--out",
                 str(tmp_path / "run")]) == 2
    assert "pip install 'chaosgd[datasets]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before a run folder is made


def test_a_seed_given_to_a_data_set_that_draws_nothing_is_refused():
    from chaosgd.experiments.config import Data
    with pytest.raises(ConfigError, match=r"data\.seed: 3, but data set 'mnist' draws nothing from a seed"):
        Data("mnist", seed=3)
    assert Data("sklearn:wine", seed=3).seed == 3 and Data("iris", seed=3).seed == 3
