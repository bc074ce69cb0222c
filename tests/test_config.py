import pytest

from chaosgd.config import Config, ConfigError
from chaosgd.presets import PRESETS, preset


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
    ({"ensemble.copies": 0}, r"ensemble\.copies: M must be an integer >= 1"),
    ({"training.target": 1.5}, r"training\.target: must be a fraction in \(0, 1\]"),
    ({"training.target": 0.0}, r"training\.target"),
    ({"model.dtype": "float32"}, r"ensemble\.epsilon: 1e-08 is at or below the resolution of float32"),
    ({"training.epochs": 0}, r"training\.epochs"),
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


def test_hash_ignores_the_name_but_not_the_numbers():
    a = preset("iris")
    assert a.with_values(name="renamed").hash() == a.hash()
    assert a.with_values(**{"data.path": "/elsewhere"}).hash() == a.hash()
    assert a.with_values(**{"training.epochs": 100}).hash() != a.hash()


def test_fields_added_later_keep_the_hash_of_older_run_folders():
    from chaosgd.presets import preset
    # The hash a paper-scale mnist-tanh run folder got from chaosgd 0.1.0 (benchmarks/results/h200/): such folders
    # must keep resuming.
    assert preset("mnist-tanh").hash() == "9ffed4a6b2f82b06"
    assert preset("mnist-tanh").with_values(**{"training.sharpness_every": 5}).hash() != "9ffed4a6b2f82b06"
