import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.engine import BudgetError, fit_examples, group_bytes
from chaosgd.dynamics import FULL_BATCH_GD, UpdateRule, member_epoch
from problems import quadratic_objective


def test_quadratic_loss_matches_closed_form():
    rng = np.random.default_rng(0)
    n, steps = 5, 30
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = q @ np.diag([0.2, 0.5, 1.0, 1.5, 3.0]) @ q.T
    theta0 = rng.standard_normal(n)
    delta = 1e-6 * rng.standard_normal(n)
    etas = np.array([0.1, 0.5, 0.6])
    params = {"theta": np.stack([np.stack([theta0, theta0 + delta])] * len(etas))}
    rec = run(quadratic_objective(), params, etas, {"A": A}, epochs=steps)
    for g, eta in enumerate(etas):
        step = np.eye(n) - eta * A
        theta = [np.linalg.matrix_power(step, t) @ theta0 for t in range(steps + 1)]
        expected_loss = [0.5 * th @ A @ th for th in theta]
        expected_dist = [np.abs(np.linalg.matrix_power(step, t) @ delta).sum() for t in range(steps + 1)]
        np.testing.assert_allclose(rec.loss[g, 0], expected_loss, rtol=1e-10)
        np.testing.assert_allclose(rec.distance[g, 0], expected_dist, rtol=1e-8)


def test_gradient_matches_central_differences(blobs):
    model = MLP((6, 5, 3), activation="tanh")
    objective = classification(model, l2=1e-2)
    data = blobs.arrays()
    params = model.init(jax.random.PRNGKey(3))
    eta = jnp.float64(1.0)
    new, _, _, _ = member_epoch(objective, FULL_BATCH_GD, 0, 0)(params, (), eta, data, 0, 0, 0)
    grad = jax.tree_util.tree_map(lambda p, q: (p - q) / eta, params, new)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(0)
    h = 1e-6
    for _ in range(12):
        i = rng.integers(len(leaves))
        idx = tuple(rng.integers(s) for s in leaves[i].shape)

        def loss_at(shift):
            shifted = list(leaves)
            shifted[i] = shifted[i].at[idx].add(shift)
            return objective.loss(jax.tree_util.tree_unflatten(treedef, shifted), data)[0]

        numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
        analytic = jax.tree_util.tree_leaves(grad)[i][idx]
        assert abs(numeric - analytic) <= 1e-7 + 1e-6 * abs(analytic)


def build(model, n_initial, n_copies, epsilon=1e-8, seed=0, perturb="all"):
    ic = initial_conditions(model, n_initial, seed=seed)
    return epsilon_ball(ic, n_copies, epsilon=epsilon, seed=seed, perturb=perturb)


def test_unperturbed_copies_stay_at_distance_exactly_zero(blobs):
    model = MLP((6, 8, 3))
    params = build(model, 2, 3, epsilon=0.0)
    rec = run(classification(model), params, 5.0, blobs.arrays(), epochs=40)
    assert np.all(rec.distance == 0.0)
    assert np.all(rec.loss[:, 1:] == rec.loss[:, :1])


def test_member_learning_rate_equals_separate_run(blobs):
    model = MLP((6, 8, 3))
    params = build(model, 1, 2, epsilon=0.0)
    etas = np.array([[0.05, 0.5, 2.0]])
    objective = classification(model)
    together = run(objective, params, etas, blobs.arrays(), epochs=25)
    for j, eta in enumerate(etas[0]):
        alone = run(objective, jax.tree_util.tree_map(lambda x: x[:, j:j + 1], params), eta, blobs.arrays(),
                    epochs=25)
        np.testing.assert_allclose(together.loss[0, j], alone.loss[0, 0], rtol=1e-12)
        np.testing.assert_allclose(together.train_accuracy[0, j], alone.train_accuracy[0, 0])


def test_same_seed_gives_identical_records(blobs):
    model = MLP((6, 8, 3))
    a = run(classification(model), build(model, 3, 2, seed=7), 3.0, blobs.arrays(), epochs=30)
    b = run(classification(model), build(model, 3, 2, seed=7), 3.0, blobs.arrays(), epochs=30)
    c = run(classification(model), build(model, 3, 2, seed=8), 3.0, blobs.arrays(), epochs=30)
    for name in ("loss", "train_accuracy", "test_accuracy", "distance"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.loss, c.loss)


def test_chunked_and_unchunked_runs_agree(blobs):
    # Matrix products over a different number of members may round differently in the last bit; in the chaotic
    # regime that roundoff grows like any perturbation, so trajectories are compared where they are not chaotic
    # and, at every learning rate, over the first steps.
    model = MLP((6, 8, 3))
    params = build(model, 5, 2)
    etas = np.array([0.1, 0.3, 0.5, 1.0, 6.0])
    objective = classification(model)
    whole = run(objective, params, etas, blobs.arrays(), epochs=30)
    chunked = run(objective, params, etas, blobs.arrays(), epochs=30, groups_per_chunk=2)
    # Distances are differences of nearby trajectories: their roundoff is absolute, about 1e-16 per parameter.
    for name, atol in (("loss", 0), ("train_accuracy", 0), ("test_accuracy", 0), ("distance", 1e-13)):
        a, b = getattr(chunked, name), getattr(whole, name)
        np.testing.assert_allclose(a[:4], b[:4], rtol=1e-9, atol=atol)
        np.testing.assert_allclose(a[..., :5], b[..., :5], rtol=1e-9, atol=atol)
    np.testing.assert_array_equal(chunked.eta, whole.eta)
    np.testing.assert_array_equal(chunked.diverged_at, whole.diverged_at)


def test_runs_of_any_length_share_one_compiled_program_and_their_records_agree(blobs):
    # A run is cut into segments (here 7; 10 + 10 + 5; 10 x 4; 13 x 19 + 3 epochs) and ends with an evaluation
    # without a step: all of them, for every length, are one compiled program, and where the runs overlap their
    # records are equal.
    from chaosgd.engine import _segment
    model = MLP((6, 7, 3))
    params = build(model, 2, 2)
    objective = classification(model)
    before = _segment._cache_size()
    runs = {epochs: run(objective, params, np.array([0.5, 4.0]), blobs.arrays(), epochs=epochs)
            for epochs in (7, 25, 40, 250)}
    assert _segment._cache_size() - before <= 1
    for short, long in ((7, 25), (25, 40), (40, 250)):
        for name in ("loss", "train_accuracy", "test_accuracy", "distance"):
            np.testing.assert_array_equal(getattr(runs[short], name), getattr(runs[long], name)[..., :short + 1])


def test_memory_budget_splits_into_chunks_with_same_results(blobs):
    model = MLP((6, 8, 3))
    params = build(model, 4, 1)
    objective = classification(model)
    whole = run(objective, params, 0.5, blobs.arrays(), epochs=10)
    with pytest.raises(BudgetError):
        run(objective, params, 0.5, blobs.arrays(), epochs=10, memory_budget=1.0)
    one = jax.tree_util.tree_map(lambda x: x[0, 0], params)
    one_group = group_bytes(objective, one, blobs.arrays(), 2)
    tiny = run(objective, params, 0.5, blobs.arrays(), epochs=10, memory_budget=one_group)  # 1 group a chunk
    np.testing.assert_allclose(tiny.loss, whole.loss, rtol=1e-12)
    # Less than one group needs with all examples at once: the gradient in chunks of examples, the same to roundoff.
    assert fit_examples(objective, one, blobs.arrays(), 2, one_group) is None
    examples = fit_examples(objective, one, blobs.arrays(), 2, 0.6 * one_group)
    assert 1 <= examples < 120 and group_bytes(objective, one, blobs.arrays(), 2, examples) <= 0.6 * one_group
    chunked = run(objective, params, 0.5, blobs.arrays(), epochs=10, memory_budget=0.6 * one_group)
    # (Distances are differences of nearby trajectories: their roundoff is absolute, about 1e-16 per parameter.)
    for name, atol in (("loss", 0), ("train_accuracy", 0), ("test_accuracy", 0), ("distance", 1e-13)):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-11, atol=atol)


@pytest.mark.parametrize("examples", [1, 7, 40, 119, 120, 500])
def test_gradients_over_chunks_of_examples_equal_the_full_batch_to_roundoff(blobs, examples):
    # Any chunk size, dividing the examples or not, with an L2 term (added once, not once per chunk) and the
    # minibatch path's whole-set loss; the test accuracy is chunked too (60 test examples).
    model = MLP((6, 8, 3))
    params = build(model, 3, 2)
    data = blobs.arrays()
    for objective, rule in ((classification(model, l2=1e-2), None),
                            (classification(model), UpdateRule(batch_size=30))):
        whole = run(objective, params, 0.4, data, epochs=8, rule=rule, groups_per_chunk=3)
        chunked = run(objective, params, 0.4, data, epochs=8, rule=rule, groups_per_chunk=3,
                      examples_per_chunk=examples)
        for name, atol in (("loss", 0), ("train_accuracy", 0), ("test_accuracy", 0), ("distance", 1e-13)):
            np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-11, atol=atol)
    with pytest.raises(ValueError, match="examples_per_chunk must be None or an integer >= 1; got 0"):
        run(classification(model), params, 0.4, data, epochs=1, examples_per_chunk=0)
    # An objective that does not say it is a mean over examples is never chunked: asked to, it is refused.
    opaque = dataclasses.replace(classification(model), chunkable=False)
    with pytest.raises(ValueError, match="Objective\\(chunkable=True\\)"):
        run(opaque, params, 0.4, data, epochs=1, examples_per_chunk=7)
    one = jax.tree_util.tree_map(lambda x: x[0, 0], params)
    assert fit_examples(opaque, one, data, 3, 1.0) is None


def test_experiments_fix_their_chunks_of_examples_from_shapes_alone():
    # Steps up to defaults.ALL_AT_ONCE_MAX (every preset's but the paper-scale CNN's) take all examples at once, as
    # before chunks existed; larger ones chunks sized to defaults.CHUNK_BYTES, whatever the machine's memory.
    from chaosgd import CNN
    from chaosgd.defaults import CHUNK_BYTES
    from chaosgd.engine import configured_examples

    def shapes(n, features):
        return {"x_train": jax.ShapeDtypeStruct((n, features), "float64"),
                "y_train": jax.ShapeDtypeStruct((n,), "int32")}
    mlp = MLP((784, 64, 10))
    assert configured_examples(classification(mlp), jax.eval_shape(mlp.init, jax.random.PRNGKey(0)),
                               shapes(60_000, 784), 6) == 60_000
    cnn = CNN()
    one = jax.eval_shape(cnn.init, jax.random.PRNGKey(0))
    examples = configured_examples(classification(cnn), one, shapes(60_000, 784), 6)
    assert 1 < examples < 60_000 and group_bytes(classification(cnn), one, shapes(60_000, 784), 6, examples) <= \
        CHUNK_BYTES


@pytest.mark.parametrize("from_env", [False, True])
def test_a_group_larger_than_the_memory_budget_is_refused_with_what_to_change(blobs, monkeypatch, from_env):
    model = MLP((6, 8, 3))
    budget = 1000.0
    if from_env:
        monkeypatch.setenv("CHAOSGD_MEMORY_BUDGET", str(budget))
    with pytest.raises(BudgetError) as error:
        run(classification(model), build(model, 2, 5), 0.5, blobs.arrays(), epochs=3,
            memory_budget=None if from_env else budget)
    message = str(error.value)
    assert isinstance(error.value, ValueError) and error.value.budget == budget and error.value.needed > budget
    for words in (f"({error.value.needed} bytes)", "(1000 bytes", "5 copies", "ensemble.copies", "float32",
                  "model.dtype", "epsilon", "1 example(s) at a time", "CHAOSGD_MEMORY_BUDGET"):
        assert words in message, words
    assert ("from CHAOSGD_MEMORY_BUDGET" in message) == from_env
    # An explicit chunk size asks for no budget.
    run(classification(model), build(model, 2, 5), 0.5, blobs.arrays(), epochs=3, memory_budget=budget,
        groups_per_chunk=1)


def test_divergence_is_recorded_and_contained(blobs):
    model = MLP((6, 16, 3), activation="relu")
    params = build(model, 2, 1)
    etas = np.array([0.05, 1e6])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec = run(classification(model), params, etas, blobs.arrays(), epochs=30)
    assert np.all(rec.diverged_at[0] == -1)
    assert np.all(np.isfinite(rec.loss[0])) and np.all(np.isfinite(rec.distance[0]))
    assert np.all(rec.diverged_at[1] > 0)
    first = rec.diverged_at[1].min()
    assert np.all(np.isnan(rec.loss[1, :, first + 1:]))
    assert np.all(np.isfinite(rec.loss[1, 0, :rec.diverged_at[1, 0]]))


def test_records_are_float64_and_have_documented_shapes(blobs):
    model = MLP((6, 8, 3))
    rec = run(classification(model), build(model, 3, 4), 1.0, blobs.arrays(), epochs=12)
    assert rec.loss.shape == (3, 5, 13) and rec.train_accuracy.shape == (3, 5, 13)
    assert rec.test_accuracy.shape == (3, 13) and rec.distance.shape == (3, 4, 13)
    for name in ("loss", "train_accuracy", "test_accuracy", "distance", "eta"):
        assert getattr(rec, name).dtype == np.float64, name
    assert rec.epochs == 12 and rec.n_copies == 4
    # t = 0 distance is the L1 norm of the initial perturbation: at most P * epsilon.
    assert np.all(rec.distance[:, :, 0] > 0) and np.all(rec.distance[:, :, 0] <= 83 * 1e-8)


def test_records_save_and_load_round_trip(tmp_path, blobs):
    model = MLP((6, 8, 3))
    rec = run(classification(model), build(model, 2, 1), 1.0, blobs.arrays(), epochs=5)
    loaded = type(rec).load(rec.save(tmp_path / "r.npz"))
    np.testing.assert_array_equal(loaded.distance, rec.distance)
    np.testing.assert_array_equal(loaded.diverged_at, rec.diverged_at)


@pytest.mark.parametrize("eta, message", [(0.0, "> 0"), (-1.0, "> 0"), (np.ones(3), "shape")])
def test_bad_learning_rates_are_refused(blobs, eta, message):
    model = MLP((6, 8, 3))
    with pytest.raises(ValueError, match=message):
        run(classification(model), build(model, 2, 1), eta, blobs.arrays(), epochs=1)


def test_a_configuration_may_fix_its_chunks_of_examples():
    # training.examples_per_chunk: the same records to roundoff (outside chaos), a different configuration (hash).
    from chaosgd.experiments import preset
    from chaosgd.experiments.problem import check_size, run_task, tasks

    base = preset("iris", quick=True).with_values(**{"training.etas": (0.05,), "training.epochs": 15,
                                                      "ensemble.initial": 2, "ensemble.copies": 1})
    chunked = base.with_values(**{"training.examples_per_chunk": 40})
    assert chunked.hash() != base.hash()
    check_size(chunked)
    whole, parts = (run_task(c, tasks(c)[0]) for c in (base, chunked))
    np.testing.assert_allclose(parts.loss, whole.loss, rtol=1e-12)
    np.testing.assert_allclose(parts.distance, whole.distance, rtol=1e-6)
    np.testing.assert_array_equal(parts.test_accuracy, whole.test_accuracy)
