import pytest

from chaosgd.experiments.config import Config, ConfigError
from chaosgd.experiments.presets import PRESETS, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("quick", [False, True])
def test_every_preset_round_trips_through_toml(name, quick):
    config = preset(name, quick=quick)
    assert Config.from_toml(config.to_toml()) == config
    assert Config.from_toml(config.to_toml()).hash() == config.hash()


def test_paper_scale_presets_follow_the_paper():
    tanh = preset("mnist-tanh")
    assert tanh.training.etas[0] == 0.0005 and tanh.training.etas[-1] == 20 and len(tanh.training.etas) == 16
    assert (tanh.ensemble.initial, tanh.ensemble.copies, tanh.ensemble.epsilon, tanh.training.epochs) == \
        (50, 5, 1e-8, 201)
    cnn = preset("mnist-cnn")
    assert (cnn.ensemble.initial, cnn.training.epochs, cnn.training.target, cnn.model.weight_scale) == \
        (40, 2000, 0.8, 0.01)
    assert preset("mnist-deep").model.hidden == (32, 32) and preset("cifar10").training.target == 0.3
    assert {preset("mnist-l2").training.l2, preset("mnist-l2-weak").training.l2} == {1e-3, 1e-5}
    assert max(preset("mnist-sigmoid").training.etas) == 40


def test_quick_scale_is_smaller_and_named():
    quick = preset("mnist-tanh", quick=True)
    assert quick.name == "mnist-tanh-quick" and quick.data.n_train == 10_000
    assert quick.ensemble.initial < 50 and quick.training.epochs < 201


@pytest.mark.parametrize("change, message", [
    ({"training.etas": (0.1, -1.0)}, r"training\.etas: .*> 0"),
    ({"training.etas": ()}, r"training\.etas: the learning-rate grid is empty"),
    ({"data.name": "imagenet"}, r"data\.name: unknown data set 'imagenet'; choose one of"),
    ({"model.activation": "swish"}, r"model\.activation: unknown activation 'swish'; choose one of"),
    ({"ensemble.copies": 0}, r"ensemble\.copies: M must be an integer in \[1, 2\^31 - 1\]"),
    ({"training.target": 1.5}, r"training\.target: must be a fraction in \(0, 1\]"),
    ({"training.target": 0.0}, r"training\.target"),
    ({"model.dtype": "float32"}, r"ensemble\.epsilon: 1e-08 is at or below the resolution of float32"),
    ({"training.epochs": 0}, r"training\.epochs"),
    ({"training.target_hold": 0}, r"training\.target_hold: must be an integer in \[1, epochs = 201\]"),
    ({"training.target_hold": 3, "training.stop_references": True},
     r"training\.target_hold: stop_references stops a reference at its first passage"),
    ({"analysis.chance_margin": 1.0}, r"analysis\.chance_margin: must be in \[0, 1\)"),
    ({"analysis.chance_margin": 0.9}, r"analysis\.chance_margin: 0\.9: chance on iris is 1/3.*less than 0\.667"),
    ({"analysis.lambda_min": -1.0}, r"analysis\.lambda_min: must be a finite slope >= 0"),
    ({"training.optimizer": "adagrad"}, r"training\.optimizer: unknown optimizer 'adagrad'; choose one of"),
    ({"training.momentum": 0.5}, r"training\.momentum: is read by momentum and nesterov only, not by optimizer 'gd'"),
    ({"training.optimizer": "adam", "training.momentum": 0.5}, r"training\.momentum: .*not by optimizer 'adam'"),
    ({"training.optimizer": "momentum", "training.momentum": 1.0}, r"training\.momentum: must be in \[0, 1\)"),
    ({"training.schedule": "step"}, r"training\.decay_every: must be an integer >= 1 with the step schedule"),
    ({"training.warmup_epochs": 5}, r"training\.warmup_epochs: is read by warmup_cosine only"),
    ({"training.schedule": "warmup_cosine", "training.warmup_epochs": 201},
     r"training\.warmup_epochs: must be an integer in \[0, epochs = 201\)"),
    ({"training.batch_size": -1}, r"training\.batch_size: must be an integer >= 0"),
    ({"model.dropout": 1.0}, r"model\.dropout: must be in \[0, 1\)"),
    ({"model.architecture": "cnn", "model.dropout": 0.5}, r"model\.dropout: dropout is an option of the MLP only"),
    ({"training.sharpness_every": 1, "training.axis": "model.width", "training.axis_values": (8.0,)},
     r"training\.sharpness_every: sharpness is tracked in sweeps over eta alone"),
    ({"training.shared_noise": False}, r"training\.shared_noise: false, but full-batch training without dropout"),
    ({"training.batch_size": 32, "training.axis": "training.batch_size", "training.axis_values": (16.0, 0.0)},
     r"training\.batch_size: is 32 here but training\.axis sweeps it over \[16\.0, 0\.0\]"),
    ({"training.axis": "training.momentum", "training.axis_values": (0.9,)},
     r"training\.axis: training\.momentum is not read by optimizer 'gd'"),
    ({"model.architecture": "cnn", "training.axis": "model.width", "training.axis_values": (4.0,)},
     r"training\.axis: model\.width changes the MLP's hidden layers; the cnn has none"),
    ({"training.sharpness_every": 1, "training.schedule": "step", "training.decay_every": 3},
     r"training\.sharpness_every: the stability limit moves with the learning rate"),
    ({"training.sharpness_examples": 10, "training.batch_size": 30},
     r"training\.sharpness_examples: the batch sharpness of minibatch training uses the epoch's own minibatches"),
    ({"training.sharpness_every": 1, "training.optimizer": "adamw"},
     r"training\.sharpness_every: no stability limit is defined here for adamw"),
    ({"training.examples_per_chunk": 0}, r"training\.examples_per_chunk: must be an integer >= 1 or absent"),
    ({"training.sharpness_top": 3}, r"training\.sharpness_top: the spectrum is measured along the tracked trajectory"),
    ({"training.density_epochs": (0,)}, r"training\.density_epochs: the spectrum is measured along the tracked"),
    ({"training.sharpness_every": 1, "training.sharpness_top": 0}, r"training\.sharpness_top: must be an integer >= 1"),
    ({"training.sharpness_every": 1, "training.sharpness_top": 2, "training.sharpness_method": "power"},
     r"training\.sharpness_top: power iteration finds one eigenvalue"),
    ({"training.sharpness_every": 1, "training.sharpness_top": 7},
     r"training\.sharpness_top: 7 eigenvalues need at least 21 Lanczos steps"),
    ({"training.sharpness_every": 1, "training.density_epochs": (0, 300)},
     r"training\.density_epochs: must be epochs in \[0, epochs = 201\]"),
    ({"training.sharpness_every": 1, "training.density_epochs": (5, 5)}, r"training\.density_epochs: .*not repeat"),
    ({"training.sharpness_every": 1, "training.sharpness_top": 2, "training.batch_size": 30},
     r"training\.sharpness_top: minibatch training tracks the batch sharpness"),
    ({"training.records_per_epoch": 0, "training.batch_size": 10}, r"training\.records_per_epoch: must be an integer"),
    ({"training.records_per_epoch": 2}, r"training\.records_per_epoch: more than one record an epoch needs "
                                        r"minibatches"),
    ({"training.records_per_epoch": 2, "training.batch_size": 10, "training.sharpness_every": 1},
     r"training\.records_per_epoch: sharpness is tracked once an epoch"),
    ({"ensemble.distance": "momentum"}, r"ensemble\.distance: unknown choice 'momentum'"),
    ({"ensemble.distance": "state", "training.optimizer": "sgd"}, r"ensemble\.distance: state, but optimizer 'sgd' "
                                                                 r"keeps no state"),
    ({"training.axis": "training.etas", "training.axis_values": (1.0,)}, r"training\.axis: unknown axis"),
    ({"training.axis_values": (1.0, 2.0)}, r"training\.axis_values: values without an axis"),
    ({"training.axis": "model.width"}, r"training\.axis_values: give training\.axis and its values together"),
    ({"training.axis": "model.width", "training.axis_values": (8.0, 8.0)}, r"values must not repeat"),
    ({"training.axis": "model.depth", "training.axis_values": (1.0, 2.5)},
     r"training\.axis_values: at model\.depth = 2\.5: model\.depth: must be an integer >= 1"),
])
def test_invalid_values_name_the_field_and_what_is_allowed(change, message):
    with pytest.raises(ConfigError, match=message):
        preset("iris").with_values(**change)


def test_unknown_fields_and_bad_toml_are_refused():
    with pytest.raises(ConfigError, match=r"training: unknown field\(s\) \['eta'\]; known:"):
        Config.from_toml("[training]\neta = [1.0]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_toml("[training\n")
    with pytest.raises(ConfigError, match="unknown preset 'mnist'; choose one of"):
        preset("mnist")
    with pytest.raises(TypeError, match="quick must be True or False; got 'no'"):
        preset("iris", quick="no")


def test_hash_ignores_the_name_but_not_the_numbers():
    a = preset("iris")
    assert a.with_values(name="renamed").hash() == a.hash()
    assert a.with_values(**{"training.epochs": 100}).hash() != a.hash()
    b = preset("mnist-tanh")  # (Iris reads no folder)
    assert b.with_values(**{"data.path": "/elsewhere"}).hash() == b.hash()


def test_fields_added_later_keep_the_hash_of_older_run_folders():
    from chaosgd.experiments.presets import preset
    # The hash a paper-scale mnist-tanh run folder got from chaosgd 0.1.0 (benchmarks/results/h200/): such folders
    # must keep resuming.
    assert preset("mnist-tanh").hash() == "9ffed4a6b2f82b06"
    assert preset("mnist-tanh").with_values(**{"training.sharpness_every": 5}).hash() != "9ffed4a6b2f82b06"
    assert preset("mnist-tanh").with_values(**{"training.target_hold": 3}).hash() != "9ffed4a6b2f82b06"
    for change in ({"training.optimizer": "sgd"}, {"training.batch_size": 100}, {"model.dropout": 0.1},
                   {"training.axis": "model.width", "training.axis_values": (8.0, 16.0)}):
        assert preset("mnist-tanh").with_values(**change).hash() != "9ffed4a6b2f82b06"


def test_a_second_axis_expands_into_one_configuration_per_value():
    config = preset("iris").with_values(**{"training.axis": "model.depth", "training.axis_values": (1.0, 3.0)})
    assert [(v, c.model.hidden, c.training.axis) for v, c in config.points] == [(1.0, (10,), None),
                                                                                (3.0, (10, 10, 10), None)]
    width = preset("iris").with_values(**{"training.axis": "model.width", "training.axis_values": (4.0,)})
    assert width.points[0][1].model.hidden == (4,)
    sgd = preset("mnist-sgd", quick=True)
    assert [c.training.batch_size for _, c in sgd.points] == [100, 1000, 10000]
    assert all(c.rule.optimizer.name == "sgd" and c.rule.seed == c.ensemble.seed for _, c in sgd.points)
    assert [c.training.momentum for _, c in preset("mnist-momentum").points] == [0.0, 0.5, 0.9]
    assert preset("iris").points == [(None, preset("iris"))]


def test_the_update_rule_follows_the_fields():
    config = preset("iris").with_values(**{"training.optimizer": "adamw", "training.weight_decay": 0.01,
                                           "training.batch_size": 30, "training.shared_noise": False,
                                           "training.schedule": "step", "training.decay_every": 5})
    rule = config.rule
    assert (rule.optimizer.name, rule.optimizer.weight_decay, rule.optimizer.schedule, rule.optimizer.decay_every,
            rule.batch_size, rule.shared_noise) == ("adamw", 0.01, "step", 5, 30, False)
    assert preset("iris").rule.optimizer.name == "gd" and preset("iris").rule.batch_size == 0


@pytest.mark.parametrize("text, expected", [
    ("training.stop_copies=False", False), ("training.stop_copies=false", False), ("training.stop_copies=0", False),
    ("training.stop_copies=no", False), ("training.stop_copies=True", True), ("training.stop_copies=1", True),
])
def test_set_parses_booleans_by_the_fields_type(text, expected):
    # A bare word used to become a string, and any non-empty string is true: "False" switched the option on.
    assert preset("mnist-tanh").with_text([text]).training.stop_copies is expected


@pytest.mark.parametrize("text, expected", [
    ("training.etas=[1, 10]", (1.0, 10.0)), ("training.etas=1,10", (1.0, 10.0)), ("training.etas=[2.5]", (2.5,)),
    ("training.etas=5", (5.0,)), ("model.hidden=[32, 32]", (32, 32)), ("ensemble.initial=1e2", 100),
    ("data.n_train=none", None), ("data.name=mnist", "mnist"), ('data.name="mnist"', "mnist"),
    ("ensemble.epsilon=1e-6", 1e-6), ("training.epochs=10_000", 10_000),
])
def test_set_parses_numbers_lists_and_strings(text, expected):
    key = text.split("=")[0]
    section, name = key.split(".")
    assert getattr(getattr(preset("iris").with_text([text]), section), name) == expected


@pytest.mark.parametrize("text, message", [
    ("nonsense.x=1", r"nonsense\.x: unknown section 'nonsense'; known: \["),
    ("training.eta=1", r"training\.eta: unknown field; known: \["),
    ("training=1", r"training: is a section"),
    ("training.etas=[1, 2", r"training\.etas: malformed list '\[1, 2'"),
    ("training.etas=[1,,2]", r"training\.etas: malformed list"),
    ("training.etas=[1, x]", r"training\.etas\[1\]: must be a finite number; got 'x'"),
    ("training.epochs=abc", r"training\.epochs: must be an integer; got 'abc'"),
    ("ensemble.initial=2.5", r"ensemble\.initial: must be an integer; got 2\.5"),
    ("ensemble.initial=true", r"ensemble\.initial: must be an integer; got 'true'"),
    ("training.stop_copies=maybe", r"training\.stop_copies: must be true or false .*got 'maybe'"),
    ("training.target=nan", r"training\.target: must be a finite number; got nan"),
    ("analysis.lambda_min=inf", r"analysis\.lambda_min: must be a finite number"),
    ("ensemble.seed=-1", r"ensemble\.seed: must be an integer in \[0, 2\^63 - 1\]; got -1"),
    ("data.seed=-3", r"data\.seed: must be an integer in \[0"),
    ("name=../../etc", r"name: '\.\./\.\./etc' is not allowed"),
    ("name=/tmp/x", r"name: '/tmp/x' is not allowed"),
    ("training.epochs", r"--set needs FIELD=VALUE"),
])
def test_set_refuses_what_it_cannot_read_and_names_the_field(text, message):
    with pytest.raises(ConfigError, match=message):
        preset("iris").with_text([text])


def test_python_and_toml_values_are_checked_by_type_too():
    from chaosgd.experiments.config import Ensemble, Training
    with pytest.raises(ConfigError, match=r"ensemble\.initial: must be an integer; got True"):
        Ensemble(initial=True)
    with pytest.raises(ConfigError, match=r"training\.etas: must be a list of finite numbers"):
        Training(etas="1,2")
    with pytest.raises(ConfigError, match=r"x\.toml: training\.epochs: must be an integer; got '50' \(str\)"):
        Config.from_toml('[training]\nepochs = "50"\n', source="x.toml")
    with pytest.raises(ConfigError, match=r"model: expected a table"):
        Config.from_toml("model = 3\n")
    assert Config.from_toml("[training]\nepochs = 50.0\n").training.epochs == 50  # an integral float is a count


def test_toml_files_that_cannot_be_read_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"is a folder, not a TOML configuration file"):
        Config.load(tmp_path)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text"):
        Config.load(latin1)
    with pytest.raises(ConfigError, match=r"missing\.toml: no such configuration file"):
        Config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        Config.load(bad)


def test_bad_input_on_the_command_line_creates_no_folder(tmp_path, monkeypatch, capsys):
    from chaosgd.cli import main
    monkeypatch.chdir(tmp_path)
    for args in (["--set", "training.etas=[1, 2"], ["--training.epochs", "2.5"], ["--set", "name=../escape"],
                 ["--ensemble.seed", "-1"], ["--set", "bogus.field=1"]):
        assert main(["sweep", "iris", "--quick", "--executor", "serial", "--quiet", *args]) == 2
        error = capsys.readouterr().err
        assert error.startswith("chaosgd: error: ") and "Traceback" not in error
    assert list(tmp_path.iterdir()) == []


def test_a_number_too_large_for_a_float_is_a_message():
    with pytest.raises(ConfigError, match=r"training\.l2: must be a finite number; got an integer of 401 digits"):
        preset("iris").with_text(["training.l2=1" + "0" * 400])


def test_quick_is_for_presets_and_a_folder_does_not_hide_one(tmp_path, monkeypatch, capsys):
    from chaosgd.cli import main
    path = tmp_path / "c.toml"
    path.write_text(preset("iris").to_toml())
    assert main(["sweep", str(path), "--quick"]) == 2
    assert "--quick scales a preset down" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "iris").mkdir()  # a folder that happens to carry a preset's name
    assert main(["sweep", "iris", "--training.epochs", "2.5"]) == 2
    assert "training.epochs: must be an integer" in capsys.readouterr().err


def test_every_exception_chaosgd_raises_on_purpose_derives_from_one_base():
    """A caller can catch ChaosgdError; each class keeps the builtin base it is a kind of."""
    import chaosgd.datasets.fetch as fetch
    import chaosgd.datasets.packaged as packaged
    import chaosgd.engine as engine
    import chaosgd.experiments.executors as executors
    import chaosgd.experiments.store as store
    import chaosgd.models.pytorch as pytorch
    import chaosgd.models.source as source
    from chaosgd import ChaosgdError
    from chaosgd.datasets import DataError, DataNotFoundError, IDXError
    from chaosgd.experiments.config import ConfigError

    classes = [engine.BudgetError, packaged.MissingExtraError, IDXError, DataNotFoundError, fetch.ChecksumError,
               fetch.FetchError, DataError, pytorch.UnsupportedModule, source.SourceError, executors.TaskFailed,
               ConfigError, store.TaskFileError]
    for cls in classes:
        assert issubclass(cls, ChaosgdError) and len(cls.__mro__) > 4, cls
    assert issubclass(DataNotFoundError, FileNotFoundError) and issubclass(ConfigError, ValueError)
    with pytest.raises(ChaosgdError):
        Config.from_dict({"name": "x", "ensemble": {"copies": 0}})
