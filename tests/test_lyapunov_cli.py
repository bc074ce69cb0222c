import json

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from chaosgd import plots  # noqa: E402
from chaosgd.cli import main  # noqa: E402
from chaosgd.lyapunov import network_exponent  # noqa: E402
from chaosgd.toymap import orbit_diagram, toy_lyapunov  # noqa: E402
from chaosgd.experiments.store import RunDir  # noqa: E402


def test_toymap_command_writes_data_and_figures(tmp_path, capsys):
    assert main(["toymap", "--n", "300", "--out", str(tmp_path)]) == 0
    with np.load(tmp_path / "toymap.npz") as z:
        assert z["orbit"].shape == (300, 200) and z["escaped"].any()
    assert (tmp_path / "fig6_orbit_diagram.png").stat().st_size > 10_000
    assert (tmp_path / "fig7_lyapunov.png").stat().st_size > 10_000
    assert "orbits escape from eta = 2.0" in capsys.readouterr().out


def test_lyapunov_command_finite_and_tangent(tmp_path, capsys):
    base = ["lyapunov", "iris", "--data.name", "blobs", "--model.hidden", "16", "--eta", "10", "--ensemble.initial",
            "3", "--ensemble.copies", "3", "--training.epochs", "60", "--executor", "serial", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "finite")]) == 0
    summary = json.loads((tmp_path / "finite" / "lyapunov.json").read_text())
    assert summary["estimator"] == "finite" and len(summary["local"]) == 3 and 0 <= summary["p_percent"] <= 100
    for name in ("fig2_distance.png", "fig3_local_exponents.png", "config.toml"):
        assert (tmp_path / "finite" / name).is_file()
    assert main(base + ["--estimator", "tangent", "--k", "2", "--out", str(tmp_path / "tangent")]) == 0
    summary = json.loads((tmp_path / "tangent" / "lyapunov.json").read_text())
    assert len(summary["mean"]) == 2 and summary["mean"][0] >= summary["mean"][1] - 1e-9
    # Iris's 83-parameter network is tracked every epoch by default: period-2 orbits show as they are.
    assert main(["sharpness", "iris", "--training.etas", "[1.0]", "--training.epochs", "6", "--executor", "serial",
                 "--out", str(tmp_path / "every"), "--quiet"]) == 0
    with np.load(tmp_path / "every" / "sharpness.npz") as z:
        assert z["epoch_eta_1"].tolist() == list(range(7))
    with pytest.raises(SystemExit):  # argparse refuses an unknown estimator and lists the choices
        main(base + ["--estimator", "adjoint", "--out", str(tmp_path)])
    assert "finite" in capsys.readouterr().err
    assert main(base + ["--k", "3", "--out", str(tmp_path / "k")]) == 2  # an option the finite estimator ignores
    assert "--k 3: the number of top exponents is an option of --estimator tangent" in capsys.readouterr().err


def test_plot_functions_draw_on_given_axes():
    import matplotlib.pyplot as plt
    t = np.arange(61)
    d = np.exp(-18 + 0.5 * np.minimum(t, 30))[None].repeat(3, 0)[None].repeat(2, 0)
    net = network_exponent(d)
    fig, axes = plt.subplots(1, 4)
    assert plots.plot_distance(d[0], net.local[0], ax=axes[0]) is axes[0]
    assert plots.plot_network_exponent(net, ax=axes[1]) is axes[1]
    etas = np.linspace(0.5, 2.1, 50)
    assert plots.plot_orbit_diagram(orbit_diagram(etas, n_transient=100, n_keep=10), ax=axes[2]) is axes[2]
    assert plots.plot_toy_lyapunov(etas, *toy_lyapunov(etas, n_transient=100, n_steps=100), ax=axes[3]) is axes[3]
    assert len(axes[0].lines) == 4   # three copies and the fitted line
    plt.close(fig)


def test_sharpness_command_writes_tracks_and_figure_14(tmp_path, capsys):
    args = ["sharpness", "iris", "--training.etas", "[0.1, 0.5]", "--training.epochs", "20", "--every", "10",
            "--executor", "serial", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    with np.load(tmp_path / "sharpness.npz") as z:
        assert z["epoch_eta_0.5"].tolist() == [0, 10, 20] and np.all(z["value_eta_0.1"] > 0)
    assert (tmp_path / "fig14_sharpness.png").stat().st_size > 10_000
    assert "2/eta = 4" in capsys.readouterr().out
    assert len(list(RunDir(tmp_path).tasks_dir.glob("*.npz"))) == 2  # a run folder: one task per learning rate
    assert main(args) == 0 and "this call computed 0" in capsys.readouterr().out  # and it resumes
    with pytest.raises(SystemExit):
        main(["sharpness", "--method", "qr", "--out", str(tmp_path)])
