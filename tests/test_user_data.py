"""A user's own data (arrays, tensors, frames, .npz) and model (model.source), from Python and from configuration."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from chaosgd.datasets import DataError, DataNotFoundError, as_dataset, from_arrays, load, load_iris, load_npz
from chaosgd.experiments.config import Config, ConfigError
from chaosgd.experiments.problem import build, dataset, pinned
from chaosgd.experiments.store import RunDir
from chaosgd.experiments.sweep import sweep


def save_iris(path, **changes):
    d = load_iris()
    arrays = {"x_train": d.x_train, "y_train": d.y_train, "x_test": d.x_test, "y_test": d.y_test, **changes}
    np.savez(path, **arrays)
    return d


def test_every_form_gives_the_same_data_set():
    d = load_iris()
    pairs = as_dataset((d.x_train, d.y_train), (d.x_test, d.y_test))
    frame = lambda x, y: pd.DataFrame({**{f"f{i}": x[:, i] for i in range(x.shape[1])}, "species": y})  # noqa: E731
    frames = as_dataset(frame(d.x_train, d.y_train), frame(d.x_test, d.y_test), label="species")
    float_labels = from_arrays(d.x_train, d.y_train.astype(float), d.x_test, d.y_test.astype(float)[:, None])
    for other in (pairs, frames, float_labels):
        np.testing.assert_array_equal(other.x_train, d.x_train)
        np.testing.assert_array_equal(other.y_test, d.y_test)
        assert other.n_classes == 3 and other.x_train.dtype == np.float64


def test_torch_tensors_and_tensor_datasets():
    torch = pytest.importorskip("torch")
    d = load_iris()
    train = torch.utils.data.TensorDataset(torch.tensor(d.x_train, dtype=torch.float32), torch.tensor(d.y_train))
    got = as_dataset(train, (torch.tensor(d.x_test), torch.tensor(d.y_test)))
    np.testing.assert_allclose(got.x_train, d.x_train, rtol=1e-6)
    np.testing.assert_array_equal(got.y_train, d.y_train)


@pytest.mark.parametrize("change, message", [
    (dict(y_train=np.array(["a"] * 120)), "whole-number class labels"),
    (dict(y_train=np.full(120, 0.5)), "not whole numbers"),
    (dict(y_train=-np.ones(120, dtype=int)), "negative label -1"),
    (dict(y_train=np.full(120, 1e20)), "y_train holds the label 1e"),
    (dict(y_train=np.eye(3)[np.zeros(120, dtype=int)]), "one-hot"),
    (dict(x_train=np.full((120, 4), np.nan)), "not finite"),
    (dict(x_test=np.zeros((30, 5))), "train examples have shape (4,) but test examples (5,)"),
    (dict(y_test=np.zeros(29, dtype=int)), "x_test holds 30 examples but y_test 29"),
    (dict(x_train=np.zeros(120)), "shape (examples, features...)"),
    (dict(y_train=np.zeros(120, dtype=int), y_test=np.zeros(30, dtype=int)), "at least two classes"),
])
def test_bad_arrays_are_refused_naming_the_array(change, message):
    d = load_iris()
    arrays = {"x_train": d.x_train, "y_train": d.y_train, "x_test": d.x_test, "y_test": d.y_test, **change}
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_arrays(**arrays)


def test_frame_features_are_matched_by_name():
    d = load_iris()
    names = ["a", "b", "c", "d"]
    train = pd.DataFrame(d.x_train, columns=names).assign(y=d.y_train)
    test = pd.DataFrame(d.x_test, columns=names).assign(y=d.y_test)[["y", "d", "c", "b", "a"]]
    np.testing.assert_array_equal(as_dataset(train, test, label="y").x_test, d.x_test)


def test_labels_that_skip_a_class_are_refused_unless_the_classes_are_given():
    d = load_iris()
    with pytest.raises(DataError, match=r"class\(es\) 0 have no example"):
        from_arrays(d.x_train, d.y_train + 1, d.x_test, d.y_test + 1)
    assert from_arrays(d.x_train, d.y_train + 1, d.x_test, d.y_test + 1, n_classes=4).n_classes == 4
    # One stray huge label: named at once, without a list as long as the label (that took all memory).
    huge = np.r_[2 ** 40, d.y_test[1:]]
    with pytest.raises(DataError, match=r"up to 1099511627776 but class\(es\) 3, 4, 5, 6, 7, 8, 9, 10, \.\.\. "
                                        r"\(1099511627773 in all\)"):
        from_arrays(d.x_train, d.y_train, d.x_test, huge)
    with pytest.raises(DataError, match="got '3'"):
        from_arrays(d.x_train, d.y_train, d.x_test, d.y_test, n_classes="3")


def test_frames_with_text_columns_or_no_label_are_refused():
    frame = pd.DataFrame({"a": [1.0, 2.0], "colour": ["red", "blue"], "y": [0, 1]})
    with pytest.raises(DataError, match="colour are not numeric"):
        as_dataset(frame, frame, label="y")
    with pytest.raises(DataError, match="label= naming its label column"):
        as_dataset(frame, frame)


def test_npz_files_load_and_bad_ones_are_named(tmp_path):
    d = save_iris(tmp_path / "iris.npz")
    got = load("npz", path=tmp_path / "iris.npz")
    np.testing.assert_array_equal(got.x_test, d.x_test)
    assert got.name == "iris" and got.n_classes == 3
    np.savez(tmp_path / "partial.npz", x_train=d.x_train, y_train=d.y_train)
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        load_npz(tmp_path / "partial.npz")
    np.savez(tmp_path / "pickled.npz", x_train=np.array([{}], dtype=object), y_train=d.y_train, x_test=d.x_test,
             y_test=d.y_test)
    with pytest.raises(DataError, match="pickled.npz"):
        load_npz(tmp_path / "pickled.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(tmp_path / "text.npz")
    with pytest.raises(DataNotFoundError, match="no such file"):
        load_npz(tmp_path / "missing.npz")


# In this process: these tests are about the data and model fields, not the executor; worker processes that
# import a user's model and read an npz file are tested by the installed command's test and the Dask sweep below.
SERIAL = {"executor": "serial", "log": lambda *a: None}


def npz_config(path, **training) -> Config:
    return Config.from_dict({"name": "own", "data": {"name": "npz", "path": str(path)},
                             "model": {"hidden": [4]}, "ensemble": {"initial": 2, "copies": 1},
                             "training": {"etas": [0.5], "epochs": 3, **training}})


def test_a_finished_npz_run_is_reported_without_its_file(tmp_path):
    from chaosgd.experiments.results import summarize
    save_iris(tmp_path / "iris.npz")
    store = sweep(npz_config(tmp_path / "iris.npz"), tmp_path / "run", **SERIAL)
    before = summarize(store.root).rows
    (tmp_path / "iris.npz").unlink()
    dataset.cache_clear()
    after = summarize(store.root)
    assert after.n_classes == 3 and after.rows[0]["stuck_at_chance"] == before[0]["stuck_at_chance"]


def test_an_npz_run_pins_its_file_and_refuses_a_changed_one(tmp_path):
    save_iris(tmp_path / "iris.npz")
    config = npz_config(tmp_path / "iris.npz")
    with pytest.raises(ConfigError, match="not pinned"):
        config.hash()  # an unpinned file cannot name a run
    store = sweep(config, tmp_path / "run", **SERIAL)
    stored = RunDir(store.root).config()
    assert stored.data.sha256 is not None and stored == pinned(config)
    sweep(stored, tmp_path / "run", **SERIAL)  # the same file resumes
    d = load_iris()
    save_iris(tmp_path / "iris.npz", x_train=d.x_train + 1)
    with pytest.raises(ConfigError, match=r"another configuration \(or the same, but the content of .*iris.npz"):
        sweep(config, tmp_path / "run", **SERIAL)
    dataset.cache_clear()  # (a process that loaded the file before the change keeps the data it verified)
    with pytest.raises(DataError, match="iris.npz has changed"):
        sweep(stored, tmp_path / "run", **SERIAL)


@pytest.mark.parametrize("change, message", [
    ({"data": {"name": "npz"}}, "data.path: data.name = 'npz' needs data.path"),
    ({"data": {"name": "iris", "path": "mine.npz"}}, "data set 'iris' reads no file"),
    ({"data": {"name": "iris", "sha256": "0" * 64}}, "data.sha256: only an npz data set"),
    ({"data": {"name": "npz", "path": "x.npz", "sha256": "xyz"}}, "64 lowercase hexadecimal"),
    ({"model": {"source": "not a name"}}, "model.source: must look like 'package.module:function'"),
    ({"model": {"source": "m:f", "hidden": [8]}}, "model.hidden is set too"),
    ({"model": {"source_sha256": "0" * 64}}, "a digest without model.source"),
])
def test_user_data_and_model_fields_are_checked(change, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(change)


MODULE = '''
import jax.numpy as jnp
from chaosgd.models import FunctionModel, MLP

def make(example_shape, n_classes):
    return MLP((example_shape[0], 5, n_classes))

def single():
    return FunctionModel(lambda key: {"w": jnp.zeros((4, 3), dtype=jnp.float32)}, lambda p, x: x @ p["w"])

def broken():
    return 42

def narrow():
    return MLP((4, 5, 2))

def wide_input():
    return MLP((5, 8, 3))

def raises():
    raise KeyError("boom")
'''


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    name = f"user_models_{tmp_path.name}"  # a fresh module for every test (imports are cached)
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)  # the current folder is importable, as for `python -m`
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_user_model_from_configuration_runs_and_pins_its_code(tmp_path, user_module):
    config = Config.from_dict({"name": "own", "model": {"source": f"{user_module}:make"},
                               "ensemble": {"initial": 2, "copies": 1}, "training": {"etas": [0.5], "epochs": 3}})
    problem = build(pinned(config))
    assert problem.model.widths == (4, 5, 3)  # the factory was given the data's shape and classes
    store = sweep(config, tmp_path / "run", **SERIAL)
    stored = RunDir(store.root).config()
    assert stored.model.source_sha256 is not None
    pytest.importorskip("dask.distributed")  # workers that import the model themselves give the same records
    on_dask = sweep(config, tmp_path / "dask", executor="dask", workers=1, progress=False, log=lambda *a: None)
    mine, theirs = (next(s.tasks_dir.glob("*.npz")) for s in (store, on_dask))
    assert np.array_equal(np.load(mine)["loss"], np.load(theirs)["loss"])
    with open(f"{user_module}.py", "a") as f:
        f.write("# edited\n")
    with pytest.raises(ConfigError, match="has changed since the run started"):
        sweep(stored, tmp_path / "run", **SERIAL)


@pytest.mark.parametrize("function, message", [
    ("single", "its parameters are float32, not float64"),
    ("broken", "returned int, not a model"),
    ("absent", "has no function 'absent'"),
    ("narrow", "shape \\(2, 2\\); the data has 3 classes"),
    ("raises", "raised KeyError: 'boom'"),
    ("wide_input", r"cannot take a batch of the data's examples, shape \(2, 4\)"),
])
def test_user_models_that_cannot_run_are_refused(user_module, function, message):
    config = Config.from_dict({"model": {"source": f"{user_module}:{function}"}})
    with pytest.raises((ConfigError, ValueError), match=message):
        build(pinned(config))


def test_a_module_edited_in_the_same_process_is_imported_again(tmp_path, user_module):
    config = Config.from_dict({"model": {"source": f"{user_module}:make"}})
    first = pinned(config)
    assert build(first).model.widths == (4, 5, 3)
    path = tmp_path / f"{user_module}.py"
    path.write_text(path.read_text().replace("(example_shape[0], 5, n_classes)", "(example_shape[0], 9, n_classes)"))
    edited = pinned(config)
    assert edited.model.source_sha256 != first.model.source_sha256
    assert build(edited).model.widths == (4, 9, 3)  # the code that runs is the file that is pinned


@pytest.mark.parametrize("source", ["os:abort", "os.path:join", "sys:exit", "subprocess:run", "chaosgd.cli:main"])
def test_standard_library_functions_are_refused_before_they_run(source):
    with pytest.raises(ValueError, match="of (Python's standard library|chaosgd itself), not a model factory"):
        pinned(Config.from_dict({"model": {"source": source}}))


def test_a_missing_module_is_named():
    with pytest.raises(ValueError, match="no module named 'no_such_module_here'"):
        pinned(Config.from_dict({"model": {"source": "no_such_module_here:make"}}))


@pytest.mark.parametrize("code, message", [
    ("import no_such_dependency_here\n", r"failed at .*\.py:1: ModuleNotFoundError: No module named 'no_such_dep"),
    ("x = 1\ny = undefined_thing\n", r"failed at .*\.py:2: NameError: name 'undefined_thing'"),
    ("def make(:\n", r"failed at .*\.py:1: SyntaxError: "),
])
def test_a_module_that_fails_to_import_is_named_with_where(tmp_path, monkeypatch, code, message):
    name = f"broken_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=f"model.source: importing {name} " + message):
        pinned(Config.from_dict({"model": {"source": f"{name}:make"}}))


def test_measure_gives_the_numbers_of_the_same_sweep(tmp_path):
    import chaosgd
    from chaosgd.experiments.config import Model
    from chaosgd.experiments.results import summarize
    from chaosgd.models import MLP

    config = Config.from_dict({"name": "same", "model": {"hidden": [8]}, "ensemble": {"initial": 4, "copies": 2},
                               "training": {"etas": [0.3, 8.0], "epochs": 30, "target": 0.8}})
    assert config.model == Model(hidden=(8,))
    rows = summarize(sweep(config, tmp_path / "run", **SERIAL)).rows
    got = chaosgd.measure(MLP((4, 8, 3)), load_iris(), etas=[0.3, 8.0], initial=4, copies=2, epochs=30, target=0.8,
                          progress=False)
    assert list(got.table["eta"]) == [0.3, 8.0] and set(got.records) == {0.3, 8.0}
    for row, (_, mine) in zip(rows, got.table.iterrows()):
        for column in ("lambda_nmle", "p_percent", "reached_percent", "tau_rmst", "final_loss_mean", "n_unresolved"):
            assert mine[column] == pytest.approx(row[column], rel=1e-12, nan_ok=True), column
    assert got.table["lambda_nmle"].notna().all() and got.table["p_percent"].iloc[0] > 0  # numbers, not blanks


def test_measure_refuses_unknown_and_bad_settings():
    import chaosgd
    from chaosgd.models import MLP

    with pytest.raises(TypeError, match="unknown setting\\(s\\) learning_rate; known: .*batch_size"):
        chaosgd.measure(MLP((4, 3)), load_iris(), etas=[1.0], learning_rate=0.1)
    with pytest.raises(ConfigError, match="ensemble.epsilon"):
        chaosgd.measure(MLP((4, 3)), load_iris(), etas=[1.0], epsilon=-1.0)
    with pytest.raises(TypeError, match="init\\(key\\) and apply"):
        chaosgd.measure(object(), load_iris(), etas=[1.0])
    with pytest.raises(TypeError, match="etas must be a list"):
        chaosgd.measure(MLP((4, 3)), load_iris(), etas=0.5)
    with pytest.raises(TypeError, match="etas must be a list"):
        chaosgd.measure(MLP((4, 3)), load_iris(), etas=np.array([[0.1, 1.0]]))
    for bad in (True, "0.1"):  # never read as 1.0 or 0.1
        with pytest.raises(TypeError, match=f"etas must be numbers; got {bad!r}"):
            chaosgd.measure(MLP((4, 3)), load_iris(), etas=[bad])
    with pytest.raises(ValueError, match="the model: its parameters are float32, not float64"):
        chaosgd.measure(MLP((4, 3), dtype="float32"), load_iris(), etas=[1.0])
    with pytest.raises(ValueError, match="one logit per class"):
        chaosgd.measure(MLP((4, 2)), load_iris(), etas=[1.0])
    with pytest.raises(ConfigError, match="batches of 200 hold the whole training set of 120 examples"):
        chaosgd.measure(MLP((4, 3)), load_iris(), etas=[1.0], optimizer="sgd", batch_size=200, records_per_epoch=2)
    with pytest.raises(ValueError, match="lacks x_test and has extra besides"):
        d = load_iris()
        chaosgd.measure(MLP((4, 3)), {"x_train": d.x_train, "y_train": d.y_train, "y_test": d.y_test, "extra": 1},
                        etas=[1.0])
    # A Dataset made by hand gets the checks of arrays: bad data is refused, not reported as divergence.
    d = load_iris()
    for bad, message in ((dataclasses.replace(d, x_train=np.where(np.arange(4) == 0, np.nan, d.x_train)),
                          "not finite"),
                         (dataclasses.replace(d, y_train=d.y_train + 0.5), "not whole numbers"),
                         (dataclasses.replace(d, n_classes=2), "n_classes must be an integer above every label")):
        with pytest.raises(DataError, match=message):
            chaosgd.measure(MLP((4, 3)), bad, etas=[1.0])


def test_sweet_spot_of_a_model_in_memory():
    import chaosgd
    from chaosgd.models import MLP

    data = load("blobs").arrays()  # 8 features, 3 classes
    spot = chaosgd.sweet_spot(MLP((8, 16, 3)), data, eta_min=0.1, eta_max=30.0, initial=6, copies=2, epochs=60,
                              search={"p_high": 50, "rel_width": 0.3})
    assert spot.low <= spot.eta <= spot.high and len(spot.evaluations) >= 3 and spot.at(spot.eta).trainable
    assert all(e.n_networks == 6 for e in spot.evaluations)


def test_the_installed_command_runs_a_user_model_on_npz_data(tmp_path):
    """The `chaosgd` command (not `python -m`) imports model.source from the folder it runs in, in its workers too."""
    import subprocess
    import sys
    from pathlib import Path

    command = Path(sys.executable).with_name("chaosgd")
    if not command.is_file():
        pytest.skip("the chaosgd command is not installed next to this Python")
    save_iris(tmp_path / "d.npz")
    (tmp_path / "cli_user_models.py").write_text(MODULE)
    (tmp_path / "c.toml").write_text('name = "t"\n[data]\nname = "npz"\npath = "d.npz"\n[model]\n'
                                     'source = "cli_user_models:make"\n[ensemble]\ninitial = 2\ncopies = 1\n'
                                     '[training]\netas = [0.5]\nepochs = 3\n')
    done = subprocess.run([str(command), "sweep", "c.toml", "--out", "run", "--workers", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "all 1 tasks are done" in done.stdout + done.stderr
    assert 'source_sha256 = "' in RunDir(tmp_path / "run").config_path.read_text()


def test_a_user_model_replaces_the_presets_built_in_one_on_the_command_line(tmp_path, user_module, capsys):
    """The default experiment (the iris preset) sets model.hidden; --model.source alone replaces that model (the
    preset's value is not "set and never used"), while a model field given beside it still is refused."""
    from chaosgd.cli import main

    common = ["--training.etas", "0.1", "--ensemble.initial", "2", "--training.epochs", "3", "--executor", "serial",
              "--quiet"]
    assert main(["sweep", "--model.source", f"{user_module}:make", "--out", str(tmp_path / "run"), *common]) == 0
    assert RunDir(tmp_path / "run").config().model.source == f"{user_module}:make"
    capsys.readouterr()
    assert main(["sweep", "--model.source", f"{user_module}:make", "--model.hidden", "12", "--out",
                 str(tmp_path / "both"), *common]) == 2
    assert "model.hidden is set too" in capsys.readouterr().err


def test_more_training_examples_than_the_data_has_are_refused():
    with pytest.raises(ConfigError, match="data.n_train: 100000, but iris has 120 training examples"):
        dataset(Config.from_dict({"data": {"n_train": 100000}}).data)
    assert len(dataset(Config.from_dict({"data": {"n_train": 120}}).data).y_train) == 120


def test_a_missing_npz_file_says_where_a_relative_path_was_read_from(tmp_path, monkeypatch):
    from chaosgd.datasets import DataNotFoundError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataNotFoundError, match=f"data.path: mine.npz: cannot be read as the .npz file .*read from the "
                                                f"current folder, {tmp_path}"):
        pinned(Config.from_dict({"data": {"name": "npz", "path": "mine.npz"}, "model": {"hidden": [8]}}))
