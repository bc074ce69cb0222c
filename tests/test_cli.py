import json

import numpy as np

from chaosgd.cli import main
from chaosgd.records import Records


def test_run_on_iris_writes_records_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--dataset", "iris", "--etas", "0.05", "1", "--initial", "3", "--copies", "2",
                 "--epochs", "20", "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "83 parameters" in printed and "records in" in printed
    records = Records.load(out / "records.npz")
    assert records.loss.shape == (6, 3, 21) and records.distance.shape == (6, 2, 21)
    assert sorted(np.unique(records.eta)) == [0.05, 1.0]
    summary = json.loads((out / "summary.json").read_text())
    assert [row["eta"] for row in summary["by_eta"]] == [0.05, 1.0]
    assert all(0 <= row["tau_censored"] <= 3 and row["n_initial"] == 3 for row in summary["by_eta"])
    assert (out / "results.csv").read_text().startswith("eta,lambda_nmle")


def test_bad_input_is_an_error_message_not_a_traceback(tmp_path, capsys):
    assert main(["run", "--dataset", "mnist", "--data-dir", str(tmp_path), "--quiet"]) == 2
    assert "chaosgd data fetch mnist" in capsys.readouterr().err
    assert main(["run", "--activation", "swish", "--epochs", "1", "--quiet", "--out", str(tmp_path)]) == 2
    assert "relu" in capsys.readouterr().err
    assert main(["run", "--dtype", "float32", "--epochs", "1", "--quiet", "--out", str(tmp_path)]) == 2
    assert "float64" in capsys.readouterr().err


def test_run_stops_copies_unless_asked_to_keep_them_with_the_same_exponents(tmp_path, capsys):
    args = ["run", "--dataset", "iris", "--etas", "0.05", "--initial", "2", "--copies", "2", "--epochs", "80",
            "--quiet"]
    assert main(args + ["--out", str(tmp_path / "stop")]) == 0
    assert main(args + ["--out", str(tmp_path / "keep"), "--keep-copies"]) == 0
    stop, keep = Records.load(tmp_path / "stop" / "records.npz"), Records.load(tmp_path / "keep" / "records.npz")
    assert stop.network_epochs < keep.network_epochs == keep.naive_network_epochs
    assert "network-epochs (of" in capsys.readouterr().out
    rows = [json.loads((tmp_path / d / "summary.json").read_text())["by_eta"][0] for d in ("stop", "keep")]
    assert rows[0]["lambda_nmle"] == rows[1]["lambda_nmle"] and rows[0]["p_percent"] == rows[1]["p_percent"]
