import numpy as np
import pytest

from chaosgd.cli import main
from chaosgd.experiments.results import summarize
from chaosgd.experiments.store import RunDir


def small(**values):
    """SMALL with some options' values replaced (an option given twice is refused)."""
    args = list(SMALL)
    for option, value in values.items():
        args[args.index(option) + 1] = value
    return args


SMALL = ["--training.etas", "0.05,1", "--ensemble.initial", "3", "--ensemble.copies", "2", "--training.epochs", "20",
         "--executor", "serial", "--quiet"]


def test_run_on_iris_writes_a_run_folder_a_table_and_a_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "iris", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lambda_NMLE" in printed and printed.strip().endswith("report.html")
    summary = summarize(out)
    records = summary.records()
    assert records.loss.shape == (6, 3, 21) and records.distance.shape == (6, 2, 21)
    assert sorted(np.unique(records.eta)) == [0.05, 1.0]
    assert [row["eta"] for row in summary.rows] == [0.05, 1.0]
    assert all(0 <= row["tau_censored"] <= 3 and row["n_initial"] == 3 for row in summary.rows)
    assert RunDir(out).csv_path.read_text().startswith("eta,lambda_nmle")


def test_bad_input_is_an_error_message_not_a_traceback(tmp_path, capsys):
    assert main(["run", "iris", *SMALL, "--data.name", "mnist", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "a")]) == 2
    assert "chaosgd data fetch mnist" in capsys.readouterr().err
    assert main(["run", "iris", *SMALL, "--model.activation", "swish", "--out", str(tmp_path / "b")]) == 2
    assert "relu" in capsys.readouterr().err
    assert main(["run", "iris", *SMALL, "--model.dtype", "float32", "--out", str(tmp_path / "c")]) == 2
    assert "float64" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()  # refused before any folder


def test_a_misspelled_option_is_answered_with_the_nearest_one(capsys):
    import pytest

    with pytest.raises(SystemExit) as stopped:
        main(["sweep", "iris", "--training.target_hld", "3"])
    assert stopped.value.code == 2
    assert "did you mean --training.target_hold?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "iris", "--eta", "1"])  # report's option, not sweep's: no misleading suggestion
    err = capsys.readouterr().err
    assert "unrecognized arguments: --eta 1" in err and "did you mean" not in err
    with pytest.raises(SystemExit):
        main(["toymap", "--reus"])  # sweetspot's --reuse is not toymap's
    assert "did you mean" not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a prefix is not taken for the option it begins (argparse's abbreviations)
        main(["sweep", "iris", "--training.epoch", "5"])
    assert "unrecognized arguments: --training.epoch 5; did you mean --training.epochs?" in capsys.readouterr().err


def test_run_stops_copies_unless_asked_to_keep_them_with_the_same_exponents(tmp_path):
    args = ["run", "iris", *small(**{"--training.etas": "0.05", "--training.epochs": "80"})]
    assert main(args + ["--out", str(tmp_path / "stop"), "--training.stop_copies", "true"]) == 0
    assert main(args + ["--out", str(tmp_path / "keep"), "--training.stop_copies", "false"]) == 0
    stop, keep = summarize(tmp_path / "stop"), summarize(tmp_path / "keep")
    assert stop.records().network_epochs < keep.records().network_epochs == keep.records().naive_network_epochs
    for name in ("lambda_nmle", "p_percent"):
        assert stop.rows[0][name] == keep.rows[0][name]


def test_version_and_help_show_every_default(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("chaosgd ")
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--out", "--training.epochs", "--ensemble.initial", "--analysis.plateau", "--set", "--executor"):
        assert option in text
    assert "(default 201)" in text and "(default 40)" in text
    assert "runs that module's code" in text  # model.source: a configuration file can run code


def test_no_help_shows_docstring_markup(capsys):
    import pytest

    from chaosgd.cli import COMMANDS
    for command in [[]] + [[name] for name, *_ in COMMANDS] + [["data"], ["data", "fetch"]]:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "``" not in capsys.readouterr().out, command


def test_command_options_are_checked_before_anything_is_computed_or_made(tmp_path, capsys):
    import pytest

    cases = [
        (["sweetspot", "iris", "--eta-min", "5", "--eta-max", "1"], "eta_min and eta_max"),
        (["sweetspot", "iris", "--p-high", "150"], "p_high"),
        (["sweetspot", "iris", "--confidence", "1"], "confidence"),
        (["sweetspot", "iris", "--max-initial", "1"], "max_initial (1) is below"),
        (["lyapunov", "iris", "--window", "5", "3"], "--window START STOP"),
        (["lyapunov", "iris", "--training.etas", "1,2"], "give it with --eta"),
        (["toymap", "--seed", "-1"], "--seed must be >= 0"),
        (["toymap", "--n", "1000000000000"], "more than the memory budget"),
        (["toymap", "--keep", "100000000000"], "--keep must be >= 1 and <= 10,000,000"),
        (["toymap", "--steps", "100000000000000"], "--steps must be >= 1 and <= 10,000,000"),
        (["toymap", "--transient", "100000000000000"], "--transient must be >= 1 and <= 10,000,000"),
        (["sharpness", "iris", "--every", "0"], "--every must be >= 1"),
        (["sharpness", "iris", "--top", "90", "--iterations", "300"], "--top 90: the network has 83 parameters"),
        (["sharpness", "iris", "--top", "5", "--iterations", "10"], "5 eigenvalues need at least 15 Lanczos steps"),
        (["uncertainty", "iris", "--epsilons", "1e-9", "1e-6"], "3 or more distinct radii"),
        (["uncertainty", "iris", "--epsilons", "1e-9", "1e-9", "1e-3"], "3 or more distinct radii"),
        (["uncertainty", "iris", "--training.epochs", "10"], "train for at least that many"),
        (["uncertainty", "mnist-sgd", "--quick"], "uncertainty measures one configuration, and this one sweeps"),
        (["uncertainty", "iris", "--epsilons", "1e-5", "1e-4", "1e-3"], "spanning at least 3 decades"),
        (["uncertainty", "iris", "--epsilons", "0", "1e-4", "1e-3"], "radii > 0"),
        (["uncertainty", "iris", "--epsilons", "1e-9", "1e-6", "1"], "ensemble.epsilon"),
    ]
    for args, message in cases:
        assert main([*args, "--out", str(tmp_path / "out")]) == 2, args
        assert message in capsys.readouterr().err, args
        assert not (tmp_path / "out").exists(), args
    (tmp_path / "afile").write_text("")
    assert main(["toymap", "--out", str(tmp_path / "afile")]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--workers", "x"])


def test_a_field_that_the_commands_own_option_sets_is_not_silently_overridden(tmp_path, capsys):
    assert main(["sharpness", "iris", "--quick", "--every", "2", "--training.sharpness_every", "3", "--out",
                 str(tmp_path / "s")]) == 2
    assert ("training.sharpness_every = 3 is given, but chaosgd sharpness sets it to 2 from its own options"
            in capsys.readouterr().err)
    assert main(["lyapunov", "iris", "--quick", "--eta", "1", "--window", "0", "10", "--set",
                 "training.stop_copies=true", "--out", str(tmp_path / "l")]) == 2
    assert "training.stop_copies = True is given, but chaosgd lyapunov sets it to False" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "l").exists()


def test_a_value_a_configuration_file_writes_and_the_command_replaces_is_said_once(tmp_path, capsys):
    from chaosgd.experiments.presets import preset

    path = tmp_path / "mine.toml"
    path.write_text(preset("iris", quick=True).with_values(**{"training.etas": (0.5, 1.0)}).to_toml())
    assert main(["lyapunov", str(path), "--eta", "1", "--k", "0", "--out", str(tmp_path / "l")]) == 2
    err = capsys.readouterr().err
    assert f"note: {path} sets training.etas = (0.5, 1.0); chaosgd lyapunov uses (1.0,)" in err
    assert "--k must be >= 1" in err and err.count("note:") == 1
    # Written as the default (to_toml writes every field): still said, once, though sharpness builds it twice.
    (tmp_path / "out").write_text("")
    assert main(["sharpness", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("sets ensemble.copies = 3; chaosgd sharpness uses 1") == 1
    assert err.count("sets training.sharpness_every = 0; chaosgd sharpness uses 1") == 1  # not the probe's
    # Fields the file does not write: nothing to say.
    path.write_text('name = "small"\n[data]\nname = "iris"\n[training]\nepochs = 30\n')
    assert main(["lyapunov", str(path), "--eta", "1", "--k", "0", "--out", str(tmp_path / "l")]) == 2
    assert "note:" not in capsys.readouterr().err


def test_an_empty_out_or_one_under_a_file_is_refused(tmp_path, capsys):
    assert main(["sweep", "iris", "--quick", "--out", ""]) == 2
    assert "--out: empty; give a folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["sweep", "iris", "--quick", "--out", str(tmp_path / "afile" / "sub")]) == 2
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err


def test_the_tangent_estimator_refuses_the_execution_options_it_would_ignore(tmp_path, capsys):
    for extra, named in ((["--workers", "0"], "--workers"), (["--executor", "dask"], "--executor dask"),
                         (["--scheduler", "tcp://x:1"], "--scheduler")):
        assert main(["lyapunov", "iris", "--quick", "--eta", "0.5", "--estimator", "tangent", *extra,
                     "--out", str(tmp_path / "l")]) == 2
        assert f"{named}: the tangent estimator runs in this process" in capsys.readouterr().err
    assert not (tmp_path / "l").exists()


def test_the_sharpness_probe_builds_its_model_only_after_the_device_is_pinned(tmp_path, monkeypatch):
    from chaosgd.experiments import executors, problem

    happened = []
    built = problem.build_model
    monkeypatch.setattr(problem, "build_model", lambda *a, **k: happened.append("model") or built(*a, **k))
    monkeypatch.setattr(executors.Execution, "pin_device", lambda self: happened.append(f"pin {self.device}"))
    monkeypatch.setattr("chaosgd.cli.measure.run_sweep", lambda *a, **k: happened.append("sweep") or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # (stopped where the sweep would start)
        main(["sharpness", "iris", "--quick", "--top", "2", "--device", "cpu", "--out", str(tmp_path / "s")])
    assert happened == ["pin cpu", "model", "sweep"]


def test_the_sweetspot_command_refuses_zero_workers(tmp_path, capsys):
    assert main(["sweetspot", "iris", "--quick", "--workers", "0", "--out", str(tmp_path / "s")]) == 2
    assert "workers must be an integer in [1, 1024]; got 0" in capsys.readouterr().err


def test_several_workers_for_the_serial_executor_are_refused_on_the_command_line(tmp_path, capsys):
    assert main(["sweep", "iris", "--executor", "serial", "--workers", "4", "--out", str(tmp_path / "run")]) == 2
    assert "workers = 4: the serial executor runs one task at a time" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, first", [
    (["--training.etas", "0.1", "--set", "training.etas=[1,10]"], "--training.etas"),
    (["--set", "training.etas=[1,10]", "--training.etas", "0.1"], "--training.etas"),
    (["--set", "training.epochs=5", "--set", "training.epochs=6"], "--set training.epochs=5"),
    (["--data-dir", "DATA", "--set", "data.path=OTHER"], "--data-dir"),
    (["--data-dir", "DATA", "--data.path", "OTHER"], "--data-dir and --data.path"),
    (["--data.path", "OTHER", "--data-dir", "DATA"], "--data-dir and --data.path"),
    (["--data.path", "OTHER", "--set", "data.path=DATA"], "--data.path and --set data.path=DATA"),
    (["--set", "data.path=DATA", "--data.path", "OTHER"], "--data.path and --set data.path=DATA"),
])
def test_a_field_given_twice_is_refused_in_either_order(tmp_path, capsys, argv, first):
    assert main(["sweep", "mnist-tanh", *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "is given twice" in err and first in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, option", [
    (["sweep", "iris", "--training.etas", "0.1", "--training.etas", "1"], "--training.etas"),
    (["sweep", "iris", "--ensemble.initial=4", "--ensemble.initial", "5"], "--ensemble.initial"),
    (["sweetspot", "iris", "--search-epochs", "5", "--search-epochs=6"], "--search-epochs"),
    (["toymap", "--n", "10", "--n", "20"], "--n"),
])
def test_an_option_given_twice_is_refused_not_overwritten(capsys, argv, option):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"{option} is given twice; give each option once" in capsys.readouterr().err


def test_a_run_far_past_divergence_reports_without_overflow_warnings_and_prints_dashes(tmp_path, capsys):
    """Every network at 1e200 diverges, at 1e150 losses reach 1e149: the report is written, no overflow warning
    reaches the terminal, and the console shows what is not measured as the report does ("–", not nan)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", "iris", "--model.activation", "relu", "--training.etas", "1e150,1e200",
                     "--ensemble.initial", "2", "--ensemble.copies", "1", "--training.epochs", "20", "--executor",
                     "serial", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert not [w for w in caught if "overflow" in str(w.message)]
    out = capsys.readouterr().out
    assert "nan" not in out and "[–, –]" in out and "e+149" in out
    assert RunDir(tmp_path / "run").report_path.is_file()


def test_a_preset_on_other_data_is_named_after_both():
    from chaosgd.cli import parser
    from chaosgd.cli.options import experiment

    def name(*words):
        return experiment(parser().parse_args(["sweep", "iris", *words])).name

    assert name("--data.name", "npz", "--data.path", "/somewhere/my data.npz") == "iris-my-data"
    assert name("--quick", "--set", "data.name=sklearn:wine") == "iris-quick-sklearn-wine"
    assert name("--data.name", "sklearn:wine", "--name", "wine-run") == "wine-run"  # a name given is kept
    assert name("--data.name", "iris") == "iris"  # the preset's own data
