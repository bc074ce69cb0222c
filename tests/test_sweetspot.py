import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosgd import Objective, run
from chaosgd.evaluation import Evaluation, Evaluator, evaluation_from_records
from chaosgd.onset import find_onset
from chaosgd.sweetspot import find_sweet_spot
from chaosgd.experiments.store import RunDir

A = 2.0  # L = a/2 |theta|^2: the GD map multiplies every deviation by (1 - eta a), exactly
ONSET = (1 + math.exp(0.05)) / A  # ln|1 - eta a| > 0.05 (the positive-exponent threshold) exactly above this


def planted_evaluator(calls):
    objective = Objective(loss=lambda p, d: (0.5 * A * p["theta"] @ p["theta"], jnp.nan),
                          test_accuracy=lambda p, d: jnp.nan)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 1, 4))
    ball = np.concatenate([centres, centres + 1e-8 * rng.uniform(-1, 1, (6, 3, 4))], axis=1)

    def evaluate(eta):
        calls.append(eta)
        records = run(objective, {"theta": ball}, eta, {}, epochs=30)
        return evaluation_from_records(records, eta)
    return evaluate


def test_search_returns_the_planted_onset_within_tolerance():
    calls = []
    spot = find_onset(planted_evaluator(calls), eta_min=0.01, eta_max=100.0, rel_width=0.02)
    assert spot.low < ONSET <= spot.high and spot.high / spot.low - 1 <= 0.02
    assert spot.eta == pytest.approx(ONSET, rel=0.02) and not spot.diverging_edge
    below = [e for e in spot.evaluations if e.eta < ONSET]
    assert all(e.p == 0 for e in below) and all(e.p == 100 for e in spot.evaluations if e.eta >= spot.high)
    assert len(calls) < 15 and spot.network_epochs == sum(e.network_epochs for e in spot.evaluations)


def test_diverging_learning_rates_bound_the_range_but_are_never_suggested():
    calls = []
    spot = find_onset(planted_evaluator(calls), eta_min=0.01, eta_max=1e12, rel_width=0.05)
    diverged = [e for e in spot.evaluations if e.diverges]
    assert diverged and diverged[-1].eta == 1e12 and all(e.n == 0 for e in diverged)
    assert spot.eta == pytest.approx(ONSET, rel=0.05)
    # A problem whose p never develops before divergence gets no suggestion, and says so.
    fake = lambda eta: Evaluation(eta, 0.0, 0, 10, 6, 0.0, 1.0 if eta > 3 else 0.0, 10)  # noqa: E731
    edge = find_onset(fake, eta_min=0.1, eta_max=10, rel_width=0.05)
    assert edge.diverging_edge and math.isnan(edge.eta) and edge.low < 3 <= edge.high


def test_stored_points_are_reused_not_recomputed():
    fresh = []
    find_onset(planted_evaluator(fresh), eta_min=0.01, eta_max=100.0, rel_width=0.02)
    stored_calls = []
    evaluate = planted_evaluator(stored_calls)
    known = {eta: Evaluation(**{**evaluate(eta).__dict__, "stored": True}) for eta in (0.5, 1.0, 1.1, 5.0)}
    stored_calls.clear()
    spot = find_onset(evaluate, eta_min=0.01, eta_max=100.0, rel_width=0.02, known=known)
    assert not set(stored_calls) & set(known) and len(stored_calls) < len(fresh)
    assert spot.eta == pytest.approx(ONSET, rel=0.02)
    assert spot.network_epochs == sum(e.network_epochs for e in spot.evaluations if not e.stored)


def test_p_comes_with_its_wilson_interval():
    e = planted_evaluator([])(2.0)  # |1 - 2 a| = 3: every one of the 6 initial conditions is positive
    z2 = 1.959964 ** 2
    assert e.p == 100 and e.n == 6 and e.ci_high == 100
    assert e.ci_low == pytest.approx(100 * 6 / (6 + z2), rel=1e-6)  # Wilson's lower bound for n of n: n / (n + z^2)
    calm = planted_evaluator([])(0.2)
    assert calm.p == 0 and calm.ci_low == 0 and calm.ci_high == pytest.approx(100 * z2 / (6 + z2), rel=1e-6)


def test_when_p_never_reaches_p_high_the_answer_is_the_highest_p():
    # p rises to 70 % at eta = 1 and falls again; nothing diverges: the search answers eta = 1 and says so.
    def fake(eta):
        p = 70.0 if 0.5 < eta < 2 else 20.0
        return Evaluation(eta, p, p - 10, p + 10, 20, 0.1, 0.0, 10)
    spot = find_onset(fake, eta_min=0.01, eta_max=20, p_high=95)
    assert not spot.p_high_reached and spot.eta == 1.0 and spot.low < 1 < spot.high
    assert max(e.eta for e in spot.evaluations) == 20 * 10 ** 2  # widened two decades, not six


def test_unresolved_exponents_count_as_unknown_never_as_not_positive():
    """An exponent too fast for the records is neither positive nor not: p's range over them decides a side when
    it can; where it cannot, the point bounds the search from above, like divergence, and is never suggested."""
    # 4 resolved, all positive, 2 unresolved: p is 67..100 %, developed at p_high = 50, open at 95.
    e = Evaluation(3.0, 100.0, 51, 100, 4, 1.0, 0.0, 10, n_unresolved=2)
    assert e.p_range() == pytest.approx((400 / 6, 100.0))
    assert e.developed(50) and e.decided(50) and not e.open(50)
    assert e.open(95) and not e.developed(95) and not e.decided(95)
    low = Evaluation(3.0, 0.0, 0, 40, 4, 0.0, 0.0, 10, n_unresolved=1)  # at most 20 %: below p_high either way
    assert not low.developed(95) and not low.open(95) and low.p_range() == (0.0, 20.0)

    def fake(eta, open_from=2.0):  # p = 0 below eta = 1, developed on [1, open_from), open from there on
        if eta < 1:
            return Evaluation(eta, 0.0, 0, 20, 20, -0.1, 0.0, 10)
        if eta < open_from:
            return Evaluation(eta, 100.0, 85, 100, 20, 0.5, 0.0, 10)
        return Evaluation(eta, 100.0, 51, 100, 4, 5.0, 0.0, 10, n_unresolved=16)
    spot = find_onset(fake, eta_min=0.1, eta_max=10, p_high=95, rel_width=0.05)
    assert 1 <= spot.eta < 1.05 and spot.p_high_reached
    edge = find_onset(lambda eta: fake(eta, open_from=1.0), eta_min=0.1, eta_max=10, p_high=95, rel_width=0.05)
    assert edge.diverging_edge and math.isnan(edge.eta) and edge.low < 1 <= edge.high  # never an open point


def test_a_users_own_jax_model_gets_a_sweet_spot(blobs):
    import jax

    from chaosgd.models import FunctionModel, count_parameters
    from chaosgd.experiments.search import model_evaluator

    def init(key):  # a plain-JAX two-layer network, as a user would write it
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (6, 16)), "b1": jnp.zeros(16),
                "w2": jax.random.normal(k2, (16, 3)), "b2": jnp.zeros(3)}

    def apply(params, x):
        return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]

    model = FunctionModel(init, apply)
    assert count_parameters(model) == 6 * 16 + 16 + 16 * 3 + 3
    evaluate = model_evaluator(model, blobs.arrays(), n_initial=6, n_copies=2, epochs=60)
    spot = find_sweet_spot(evaluate, eta_min=0.1, eta_max=30.0, p_high=50, rel_width=0.2)
    best = evaluate(spot.fastest)
    assert spot.low <= spot.fastest <= spot.eta <= spot.high and best.trainable and evaluate(spot.eta).trainable
    assert best.progress == max(e.progress for e in spot.evaluations if e.trainable)


def test_the_sweetspot_command_trains_at_its_pick_and_a_second_search_computes_nothing(tmp_path, capsys):
    from chaosgd.cli import main

    # Two learning rates a round on the processes executor (one worker process: a second would only start and
    # compile again), and the training at the pick on 6 initial conditions, not the preset's 20.
    small = ["--parallel", "2", "--workers", "1", "--ensemble.initial", "6"]
    assert main(["sweetspot", "iris", "--quick", "--p-high", "50", "--out", str(tmp_path), "--search-epochs", "40",
                 "--train", *small, "--max-initial", "16"]) == 0
    out = capsys.readouterr().out
    assert "recommended eta = " in out and "trained at eta" in out and "network-epochs" in out
    assert re.search(r"\(CI \d+\.\.\d+, (8|16) initial conditions\)", out)  # an open decision got more
    trained = out.split("trained at")[1]
    assert re.search(r"\d+/\d+ reached 90%, restricted mean [\d.]+ epochs \[95 % CI [\d.]+, [\d.]+\] up to epoch",
                     trained)
    assert list((tmp_path / "trained").glob("eta-*/tasks/*.npz"))
    assert (tmp_path / "sweetspot.png").is_file() and (tmp_path / "sweetspot.json").is_file()
    # Every evaluation is stored: the same search again computes nothing and recommends the same learning rate
    # (here in this process: two learning rates a round, one after the other).
    stored = len(list(RunDir(tmp_path / "evaluations").tasks_dir.glob("*.npz")))
    assert stored >= 4
    serial = ["--parallel", "2", "--executor", "serial", "--ensemble.initial", "6"]
    assert main(["sweetspot", "iris", "--quick", "--p-high", "50", "--out", str(tmp_path), "--search-epochs", "40",
                 *serial, "--max-initial", "16"]) == 0
    again = capsys.readouterr().out
    assert len(list(RunDir(tmp_path / "evaluations").tasks_dir.glob("*.npz"))) == stored
    assert again.split("recommended eta = ")[1].split()[0] == out.split("recommended eta = ")[1].split()[0]
    assert "reused" not in out.split("cost: ")[1].split("\n")[0]
    assert re.search(r"cost: ([\d,]+) network-epochs \(\1 of them computed earlier and reused\) in", again)


class SpreadCurvature(Evaluator):
    """p(eta) known by construction: initial condition i has its own curvature a_i ~ U(1, 3) (a parameter that GD
    cannot move), so its exponent is ln|1 - eta a_i| and p(eta) = P(a > ONSET_A / eta) = (3 - ONSET_A / eta) / 2."""

    def __init__(self, n_initial, **kw):
        super().__init__(n_initial, **kw)
        self.batches = []
        self.objective = Objective(
            loss=lambda p, d: (0.5 * jax.lax.stop_gradient(p["a"]) * p["theta"] @ p["theta"], jnp.nan),
            test_accuracy=lambda p, d: jnp.nan)

    def records(self, eta, first, count):
        rngs = [np.random.default_rng(i) for i in range(first, first + count)]
        theta = np.stack([r.standard_normal(4) for r in rngs])[:, None]
        a = np.array([r.uniform(1, 3) for r in rngs])[:, None]
        noise = 1e-8 * np.random.default_rng(first).uniform(-1, 1, (count, 3, 4))
        ball = {"theta": np.concatenate([theta, theta + noise], axis=1), "a": np.repeat(a, 4, axis=1)}
        return run(self.objective, ball, eta, {}, epochs=30, initial_condition=first + np.arange(count))

    def many(self, etas):
        self.batches.append(len(etas))
        return super().many(etas)


ONSET_A = 1 + math.exp(0.05)


def true_p(eta):
    return float(np.clip((3 - ONSET_A / eta) / 2, 0, 1))


def test_undecided_points_get_more_initial_conditions_until_the_bracket_holds_at_the_confidence():
    loose = find_onset(SpreadCurvature(10), eta_min=0.5, eta_max=10.0, rel_width=0.05)
    assert not loose.confident  # 10 of 10 positive: the Wilson interval reaches down to 72 %
    evaluate = SpreadCurvature(10)
    spot = find_onset(evaluate, eta_min=0.5, eta_max=10.0, rel_width=0.05, max_initial=320)
    ends = {e.eta: e for e in spot.evaluations if e.eta in (spot.low, spot.high)}
    assert spot.confident and ends[spot.low].ci_high < 95 <= ends[spot.high].ci_low
    assert true_p(spot.low) < 0.95 < true_p(spot.high)  # the planted p(eta) agrees with the bracket
    assert spot.low < spot.eta <= spot.high
    # Where p stayed undecided, all 320 initial conditions were trained; decided points were not extended.
    for e in spot.evaluations:
        assert evaluate.initial(e.eta) == 320 or e.decided(95)
        assert evaluate.initial(e.eta) == 10 or not find_decided_at(evaluate, e.eta, evaluate.initial(e.eta) // 2)
    assert any(evaluate.initial(e.eta) == 320 for e in spot.evaluations)
    # Extending trained only the new initial conditions: the work is exactly what the records hold.
    assert spot.network_epochs == sum(evaluate.initial(e.eta) * 4 * 30 for e in spot.evaluations)
    with pytest.raises(ValueError, match="max_initial needs an Evaluator"):
        find_onset(planted_evaluator([]), eta_min=0.01, eta_max=100.0, max_initial=20)


def find_decided_at(evaluate, eta, n):
    """Whether the first n initial conditions alone already decided p at eta (then it should not have grown)."""
    records = evaluate._records[float(eta)].select(np.arange(n))
    return evaluation_from_records(records, eta).decided(95)


def test_multisection_cuts_the_bracket_k_ways_per_round():
    one, three = SpreadCurvature(20), SpreadCurvature(20)
    bisect = find_onset(one, eta_min=0.5, eta_max=10.0, rel_width=0.02)
    multi = find_onset(three, eta_min=0.5, eta_max=10.0, rel_width=0.02, parallel=3)
    assert 3 in three.batches and set(three.batches) <= {3}  # the cuts of a round were asked for together
    rounds = len(three.batches)
    bisections = len(bisect.evaluations) - (len(multi.evaluations) - 3 * rounds)
    assert rounds < bisections  # fewer rounds of waiting than one-at-a-time bisection steps
    assert multi.low < multi.eta <= multi.high and multi.high / multi.low - 1 <= 0.02
    assert multi.eta == pytest.approx(bisect.eta, rel=0.05)
    with pytest.raises(ValueError, match="parallel"):
        find_onset(one, eta_min=0.5, eta_max=10.0, parallel=0)


def test_an_equinox_model_trains_and_gets_a_sweet_spot(blobs):
    import equinox as eqx

    from chaosgd.models import count_parameters, from_equinox
    from chaosgd.experiments.search import model_evaluator

    model = from_equinox(lambda key: eqx.nn.MLP(6, 3, 16, 1, activation=jnp.tanh, key=key))
    assert count_parameters(model) == 6 * 16 + 16 + 16 * 3 + 3
    data = blobs.arrays()
    # The engine's loss at t = 0 is the cross-entropy of the module itself, computed here with numpy.
    params = model.init(jax.random.PRNGKey(0))
    module = eqx.combine(params, eqx.partition(eqx.nn.MLP(6, 3, 16, 1, activation=jnp.tanh,
                                                          key=jax.random.PRNGKey(0)), eqx.is_inexact_array)[1])
    (w1, b1), (w2, b2) = [(np.asarray(layer.weight), np.asarray(layer.bias)) for layer in module.layers]
    logits = np.tanh(np.asarray(data["x_train"]) @ w1.T + b1) @ w2.T + b2
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    expected = -logp[np.arange(len(logp)), np.asarray(data["y_train"])].mean()
    ball = jax.tree_util.tree_map(lambda x: x[None, None], params)
    from chaosgd import classification
    records = run(classification(model), ball, 0.1, data, epochs=1)
    assert records.loss[0, 0, 0] == pytest.approx(expected, rel=1e-12)
    spot = find_sweet_spot(model_evaluator(model, data, n_initial=6, n_copies=2, epochs=60), eta_min=0.1,
                           eta_max=30.0, p_high=50, rel_width=0.2)
    assert spot.low <= spot.eta <= spot.high and spot.at(spot.eta).trainable


def test_multisection_on_a_dask_local_cluster_gives_the_same_evaluations():
    from chaosgd.experiments.config import Config, Data, Ensemble, Model, Training
    from chaosgd.experiments.search import config_evaluator

    config = Config(name="tiny", data=Data("iris"), model=Model(hidden=(6,)), ensemble=Ensemble(initial=6, copies=2),
                    training=Training(etas=(1.0,), epochs=40))
    here = config_evaluator(config, epochs=40)
    dask = config_evaluator(config, epochs=40, workers=2, executor="dask")
    try:
        spot = find_sweet_spot(dask, eta_min=0.05, eta_max=5.0, p_high=50, rel_width=0.3, parallel=2)
        assert type(dask._pool).__name__ == "DaskExecutor"
    finally:
        dask.close()
        here_store = here.store
    assert dask._pool is None and spot.low <= spot.eta <= spot.high
    try:
        for e in spot.evaluations:  # each learning rate computed in a Dask worker equals the same computed here
            assert here(e.eta) == e
    finally:
        here.close()
    assert not here_store.root.exists()  # the temporary store is removed


def test_reusing_a_run_of_another_problem_is_refused_with_the_fields_named(tmp_path, capsys):
    from chaosgd.cli import main
    from chaosgd.experiments.sweep import sweep
    from test_sweep import small_config

    other = small_config(**{"model.hidden": (12,), "training.etas": (0.1,), "ensemble.initial": 2})
    sweep(other, tmp_path / "other", executor="serial", progress=False, log=lambda *a: None)
    assert main(["sweetspot", "iris", "--quick", "--reuse", str(tmp_path / "other"), "--out",
                 str(tmp_path / "search")]) == 2
    err = capsys.readouterr().err
    assert "another problem" in err and "model.hidden" in err
    assert not (tmp_path / "search").exists()  # a refused command leaves no folder behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    assert main(["sweetspot", "iris", "--quick", "--reuse", str(tmp_path / "other"), "--out",
                 str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "kept"  # a folder that was there stays


def test_more_learning_rates_at_once_than_a_search_uses_are_refused(tmp_path, capsys):
    from chaosgd.cli import main
    assert main(["sweetspot", "iris", "--parallel", "1000000000", "--out", str(tmp_path / "s")]) == 2
    assert "parallel must be an integer in [1, 64]" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_search_store_keeps_only_what_shapes_p(tmp_path):
    from chaosgd.experiments.search import ConfigEvaluator
    from test_sweep import small_config

    a = ConfigEvaluator(small_config(**{"training.sharpness_every": 5}), epochs=20, store=tmp_path / "a")
    b = ConfigEvaluator(small_config(**{"training.etas": (3.0,), "training.target": 0.5}), epochs=20,
                        store=tmp_path / "b")
    assert a.config.hash() == b.config.hash()  # another grid or target: the stored evaluations still apply
    assert a.config.training.sharpness_every == 0 and a.config.training.epochs == 20
    c = ConfigEvaluator(small_config(**{"training.l2": 1e-3}), epochs=20, store=tmp_path / "c")
    assert c.config.hash() != a.config.hash()


def test_sweetspot_on_iris_with_defaults_recommends_where_networks_train_with_the_onset_beside(tmp_path, capsys):
    """The paper-scale Iris configuration: p tops out where networks end at chance (eta = 1: 38 of 50 at paper
    scale); the recommendation must be a learning rate at which most of the 50 networks reach the 90 % target."""
    from chaosgd.cli import main

    out = tmp_path / "search"
    assert main(["sweetspot", "iris", "--out", str(out), "--train"]) == 0
    text = capsys.readouterr().out
    saved = json.loads((out / "sweetspot.json").read_text())
    best = next(e for e in saved["evaluations"] if e["eta"] == saved["eta"])
    assert best["stuck_fraction"] + best["diverged_fraction"] <= 0.25 and best["progress"] > 0.8
    assert saved["interval"][0] <= saved["eta"] <= saved["interval"][1] and saved["reason"] in text
    assert "networks stop learning" in saved["reason"]  # the failing edge above the recommendation is named
    assert all(e["eta"] < 1 for e in saved["evaluations"] if e["progress"] >= best["progress"])
    assert saved["fastest"] <= saved["eta"] == saved["edge"]
    reached, total = map(int, re.search(r"(\d+)/(\d+) reached 90%", text).groups())
    assert total == 50 and reached > 25
    cost = saved["cost"]
    assert cost["grid_network_epochs"] == 16 * 50 * 6 * 201 and cost["fraction_of_grid"] <= 0.25
    assert cost["network_epochs"] == sum(e["network_epochs"] for e in saved["evaluations"])
    assert len(list(RunDir(out / "evaluations").tasks_dir.glob("*.npz"))) == len(saved["evaluations"])
    assert (out / "sweetspot.png").is_file()


def test_a_search_reusing_a_sweep_of_its_horizon_and_a_fresh_search_agree(tmp_path, capsys):
    from chaosgd.cli import main

    common = ["iris", "--quick", "--quiet", "--executor", "serial"]
    assert main(["sweep", *common, "--set", "training.etas=[0.01, 0.1, 1]", "--set", "training.epochs=30", "--set",
                 "ensemble.initial=6", "--set", "ensemble.copies=3", "--out", str(tmp_path / "grid")]) == 0
    spots = {}
    for name, extra in (("fresh", []), ("reused", ["--reuse", str(tmp_path / "grid")])):
        assert main(["sweetspot", "iris", "--quick", "--search-epochs", "30", "--search-initial", "6",
                     "--search-copies", "3", "--out", str(tmp_path / name), *extra]) == 0
        spots[name] = json.loads((tmp_path / name / "sweetspot.json").read_text())
    capsys.readouterr()
    fresh, reused = spots["fresh"], spots["reused"]
    stored = [e for e in reused["evaluations"] if e["stored"]]
    assert stored and not any(e["stored"] for e in fresh["evaluations"])
    # A stored learning rate that the fresh search also evaluated gives the same evaluation: same horizon, same
    # 6 initial conditions and 3 copies.
    same = {e["eta"]: e for e in fresh["evaluations"]}
    for e in stored:
        if e["eta"] in same:
            assert {**e, "stored": False} == same[e["eta"]]
    assert reused["eta"] == fresh["eta"] and reused["cost"]["network_epochs"] < fresh["cost"]["network_epochs"]
    # A sweep of another horizon is refused, and the message says how to reuse it.
    assert main(["sweetspot", "iris", "--quick", "--search-epochs", "20", "--reuse", str(tmp_path / "grid"),
                 "--out", str(tmp_path / "other")]) == 2
    assert "--search-epochs 30" in capsys.readouterr().err


@pytest.mark.parametrize("changes, eta_range", [
    ({"training.optimizer": "momentum", "training.momentum": 0.5}, (0.05, 5.0)),
    ({"training.optimizer": "adam"}, (0.001, 1.0)),
    ({"training.optimizer": "sgd", "training.batch_size": 40}, (0.05, 5.0)),
])
def test_the_search_trains_with_the_configured_optimiser(changes, eta_range):
    from chaosgd import epsilon_ball, initial_conditions
    from chaosgd.experiments.config import Config, Data, Ensemble, Model, Training
    from chaosgd.experiments.problem import build
    from chaosgd.experiments.search import config_evaluator

    config = Config(name="tiny", data=Data("iris"), model=Model(hidden=(6,)), ensemble=Ensemble(initial=6, copies=2),
                    training=Training(etas=(1.0,), epochs=30)).with_values(**changes)
    evaluate = config_evaluator(config, epochs=30)
    try:
        assert evaluate.config.rule == config.rule
        spot = find_sweet_spot(evaluate, eta_min=eta_range[0], eta_max=eta_range[1], p_high=50, rel_width=0.5)
        assert spot.low <= spot.eta <= spot.high and evaluate(spot.eta).trainable
        # Each evaluation is p of the ensemble trained by that optimiser, computed here again from scratch.
        e = spot.evaluations[0]
        problem = build(config)
        ball = epsilon_ball(initial_conditions(problem.model, 6), 2, epsilon=config.ensemble.epsilon)
        records = run(problem.objective, ball, e.eta, problem.arrays, epochs=30, rule=config.rule)
        assert evaluation_from_records(records, e.eta, **config.analysis.fit).p == e.p
    finally:
        evaluate.close()


def test_the_search_judges_progress_with_the_configurations_held_target():
    import dataclasses

    from chaosgd.experiments.config import Config, ConfigError, Data, Ensemble, Model, Training
    from chaosgd.experiments.search import config_evaluator

    config = Config(name="held", data=Data("iris"), model=Model(hidden=(6,)), ensemble=Ensemble(initial=4, copies=1),
                    training=Training(etas=(1.0,), epochs=40, target_hold=5))
    with pytest.raises(ConfigError, match="training.target_hold = 5: a passage needs"):
        config_evaluator(config, epochs=4)
    held = config_evaluator(config, epochs=20)
    try:
        assert held.trainability["hold"] == 5
        trained = held.records(1.0, 0, 4)
        # Accuracies that pass the target for one epoch at t = 2, fall back, and hold it from t = 10 on: first
        # passage counts t = 2, a hold of 5 epochs t = 10.
        accuracy = np.full_like(trained.test_accuracy, 0.5)
        accuracy[:, 2], accuracy[:, 10:] = 0.95, 0.95
        records = dataclasses.replace(trained, test_accuracy=accuracy)
        first = evaluation_from_records(records, 1.0, target=0.9, n_classes=3)
        held_5 = evaluation_from_records(records, 1.0, target=0.9, n_classes=3, hold=5)
        assert held.evaluation(records, 1.0).progress == held_5.progress < first.progress
        # (before t = 10 accuracy counts half its capped fraction of the target: 0.5 / 0.9 / 2, and t = 2's 1 / 2)
        assert held_5.progress == pytest.approx((9 * 0.5 / 0.9 / 2 + 0.5 + 11) / 21)
    finally:
        held.close()


def test_a_hold_longer_than_the_training_is_refused_before_any_training(blobs, monkeypatch):
    from chaosgd.experiments import search
    from chaosgd.models import MLP as chaosgd_mlp

    monkeypatch.setattr(search, "train", lambda *a, **k: pytest.fail("trained before refusing"))
    model = chaosgd_mlp((6, 8, 3))
    with pytest.raises(ValueError, match="hold = 7: a passage needs that many epochs at the target, more than the 6"):
        search.model_evaluator(model, blobs.arrays(), n_initial=2, n_copies=1, epochs=6, hold=7)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        search.model_evaluator(model, blobs.arrays(), n_initial=2, n_copies=1, epochs=0)


def test_a_search_that_finds_its_records_stored_starts_no_workers(tmp_path):
    from chaosgd.experiments.config import Config, Data, Ensemble, Model, Training
    from chaosgd.experiments.search import config_evaluator

    config = Config(name="stored", data=Data("iris"), model=Model(hidden=(6,)), ensemble=Ensemble(initial=2, copies=1),
                    training=Training(etas=(1.0,), epochs=20))
    first = config_evaluator(config, epochs=20, store=tmp_path / "ev", executor="serial")
    try:
        computed = first.records(1.0, 0, 2)
        assert first.network_epochs_loaded == 0 and first._pool is not None
    finally:
        first.close()
    again = config_evaluator(config, epochs=20, store=tmp_path / "ev", executor="processes", workers=2)
    try:
        loaded = again.records(1.0, 0, 2)
        assert again._pool is None and again.network_epochs_loaded == computed.network_epochs == 2 * 2 * 20
        np.testing.assert_array_equal(loaded.distance, computed.distance)
    finally:
        again.close()
