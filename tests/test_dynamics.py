"""The training map beyond full-batch GD: optax optimisers, minibatches, dropout and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.dynamics import UpdateRule, batch_order
from chaosgd.lyapunov import local_exponent
from chaosgd.objective import cross_entropy
from chaosgd.optimizers import Optimizer
from chaosgd.tangent import tangent_exponents
from problems import quadratic_problem

EIGENVALUES = [0.1, 0.5, 1.0, 2.0, 3.5]


def ball_of(model, n_initial=2, n_copies=3, epsilon=1e-8):
    return epsilon_ball(initial_conditions(model, n_initial), n_copies, epsilon=epsilon)


def same(a, b):
    """Records equal to the last bit (NaN where NaN)."""
    return all(np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
               for x, y in zip(a.arrays().values(), b.arrays().values()))


@pytest.mark.parametrize("eta", [0.5, 5.0])
def test_sgd_on_the_whole_training_set_is_bit_identical_to_gd(blobs, eta):
    model = MLP((6, 8, 3))
    objective, ball, data = classification(model), ball_of(model), blobs.arrays()
    gd = run(objective, ball, eta, data, epochs=30)
    for batch in (0, len(blobs.y_train), 10_000):
        sgd = run(objective, ball, eta, data, epochs=30, rule=UpdateRule(Optimizer("sgd"), batch_size=batch))
        assert same(gd, sgd)
    assert np.all(gd.steps_per_epoch == 1)


def heavy_ball_exponent(eta, beta):
    """ln of the largest spectral radius over the eigenvalues a of [[1 + beta - eta a, -beta], [1, 0]]."""
    return max(np.log(np.abs(np.linalg.eigvals([[1 + beta - eta * a, -beta], [1, 0]])).max()) for a in EIGENVALUES)


# Two (eta, beta) below the heavy-ball stability limit eta a_max < 2 (1 + beta), two above it.
@pytest.mark.parametrize("eta, beta", [(0.3, 0.5), (0.7, 0.3), (0.95, 0.5), (1.2, 0.9)])
def test_heavy_ball_exponents_match_the_closed_form(eta, beta):
    objective, data, params = quadratic_problem(EIGENVALUES)
    expected = heavy_ball_exponent(eta, beta)
    assert (expected > 0) == (eta * max(EIGENVALUES) > 2 * (1 + beta))
    rule = UpdateRule(Optimizer("momentum", momentum=beta))
    rng = np.random.default_rng(1)
    theta = params["theta"]
    copies = np.stack([theta] + [theta + 1e-8 * rng.uniform(-1, 1, theta.size) for _ in range(4)])
    rec = run(objective, {"theta": copies[None]}, eta, data, epochs=150, rule=rule)
    assert local_exponent(rec.distance[0], window=(60, 150)).exponent == pytest.approx(expected, abs=1e-3)
    tangent = tangent_exponents(objective, params, eta, data, epochs=150, rule=rule)
    assert tangent.over(60)[0] == pytest.approx(expected, abs=1e-3)


def test_the_tangent_space_holds_the_optimiser_state():
    """Heavy ball on a quadratic is a linear map on (theta, m) with the eigenvalues of the closed form, two per
    eigenvalue of A: the top two tangent exponents are its two largest."""
    eta, beta = 0.95, 0.5
    objective, data, params = quadratic_problem(EIGENVALUES)
    roots = np.concatenate([np.abs(np.linalg.eigvals([[1 + beta - eta * a, -beta], [1, 0]])) for a in EIGENVALUES])
    tangent = tangent_exponents(objective, params, eta, data, epochs=300, k=2,
                                rule=UpdateRule(Optimizer("momentum", momentum=beta)))
    np.testing.assert_allclose(tangent.over(150), np.sort(np.log(roots))[::-1][:2], atol=2e-3)


@pytest.mark.parametrize("batch_size, dropout", [(32, 0.0), (50, 0.0), (0, 0.3), (50, 0.3)])
def test_unperturbed_copies_stay_at_distance_zero_under_shared_noise(blobs, batch_size, dropout):
    model = MLP((6, 8, 3), dropout=dropout)
    rule = UpdateRule(Optimizer("adam"), batch_size=batch_size)
    rec = run(classification(model), ball_of(model, epsilon=0.0), 0.05, blobs.arrays(), epochs=20, rule=rule)
    assert np.all(rec.distance == 0.0)
    assert np.all(rec.loss[:, 1:] == rec.loss[:, :1])
    assert np.all(rec.steps_per_epoch == (-(-120 // batch_size) if batch_size else 1))
    # Without shared noise the same unperturbed copies part at once: what they measure is the noise.
    own = run(classification(model), ball_of(model, epsilon=0.0), 0.05, blobs.arrays(), epochs=3,
              rule=UpdateRule(Optimizer("adam"), batch_size=batch_size, shared_noise=False))
    assert np.all(own.distance[:, :, 1:] > 0)


def test_batch_order_covers_every_example_once_and_pads_the_last_batch():
    rule = UpdateRule(batch_size=32, seed=3)
    index, weight = (np.asarray(a) for a in batch_order(rule, 100, 7, 0, 4))
    assert index.shape == weight.shape == (4, 32)
    assert sorted(index.ravel()[weight.ravel() == 1]) == list(range(100))
    assert weight.sum() == 100 and np.all(weight[-1, 100 - 96:] == 0)
    other = [np.asarray(batch_order(rule, 100, ic, copy, t)[0]) for ic, copy, t in [(7, 0, 5), (8, 0, 4)]]
    assert not any(np.array_equal(index, o) for o in other)        # a new order each epoch and initial condition
    assert np.array_equal(index, batch_order(rule, 100, 7, 2, 4)[0])   # shared by the copies
    assert not np.array_equal(index, batch_order(UpdateRule(batch_size=32, seed=3, shared_noise=False),
                                                 100, 7, 2, 4)[0])
    assert batch_order(UpdateRule(batch_size=100), 100, 0, 0, 0) == (None, None)


def test_a_minibatch_run_equals_a_plain_loop_over_the_same_batches(blobs):
    """The engine's minibatch heavy ball against a loop written out here: one network, batches from
    ``batch_order`` with the padding dropped, the mean cross-entropy of each batch, m = g + beta m."""
    model, eta, beta, batch = MLP((6, 8, 3)), 0.3, 0.8, 50
    objective, data = classification(model), blobs.arrays()
    rule = UpdateRule(Optimizer("momentum", momentum=beta), batch_size=batch, seed=4)
    ball = epsilon_ball(initial_conditions(model, 1, seed=4, first=2), 0, seed=4, first=2)
    rec = run(objective, ball, eta, data, epochs=8, rule=rule, initial_condition=[2])

    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x[0, 0]), ball)
    momentum = jax.tree_util.tree_map(jnp.zeros_like, params)

    def batch_loss(p, x, y):
        return cross_entropy(model.apply(p, x), y)

    losses = []
    for t in range(8):
        losses.append(float(batch_loss(params, data["x_train"], data["y_train"])))
        index, weight = batch_order(rule, 120, 2, 0, t)
        for rows, w in zip(np.asarray(index), np.asarray(weight)):
            rows = rows[w > 0]
            g = jax.grad(batch_loss)(params, data["x_train"][rows], data["y_train"][rows])
            momentum = jax.tree_util.tree_map(lambda m, g: g + beta * m, momentum, g)
            params = jax.tree_util.tree_map(lambda p, m: p - eta * m, params, momentum)
    np.testing.assert_allclose(rec.loss[0, 0, :8], losses, rtol=1e-12)
    assert rec.steps_per_epoch[0] == 3


def test_a_step_schedule_follows_its_closed_form():
    """GD on a quadratic with the rate eta * 0.5 ** (t // 3): theta(T) = prod_t (I - eta_t A) theta(0)."""
    objective, data, params = quadratic_problem(EIGENVALUES)
    rule = UpdateRule(Optimizer(schedule="step", decay_every=3, decay_factor=0.5))
    rec = run(objective, {"theta": params["theta"][None, None]}, 0.5, data, epochs=10, rule=rule)
    theta, expected = params["theta"], []
    for t in range(11):
        expected.append(0.5 * theta @ data["A"] @ theta)
        theta = theta - 0.5 * 0.5 ** (t // 3) * data["A"] @ theta
    np.testing.assert_allclose(rec.loss[0, 0], expected, rtol=1e-12)


def test_warmup_cosine_rises_to_the_peak_and_ends_at_zero():
    shape = Optimizer(schedule="warmup_cosine", warmup_epochs=2).shape(steps_per_epoch=5, epochs=10)
    values = np.array([float(shape(s)) for s in range(51)])
    assert values[0] == 0 and values[10] == pytest.approx(1) and values[50] == pytest.approx(0, abs=1e-12)
    assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(values[10:]) <= 0)


def test_any_optax_optimiser_can_be_given_from_python(blobs):
    model = MLP((6, 8, 3))
    rule = UpdateRule(Optimizer.custom(lambda lr: optax.lion(lr)))
    rec = run(classification(model), ball_of(model), 0.01, blobs.arrays(), epochs=10, rule=rule)
    assert rec.loss[0, 0, -1] < rec.loss[0, 0, 0]
    assert rule.optimizer.name == "custom"


def test_dropout_masks_only_in_training(blobs):
    plain, dropped = MLP((6, 8, 3)), MLP((6, 8, 3), dropout=0.5)
    params = plain.init(jax.random.PRNGKey(0))
    x = blobs.arrays()["x_train"]
    np.testing.assert_array_equal(plain.apply(params, x), dropped.apply(params, x))
    key = jax.random.PRNGKey(1)
    assert not np.allclose(dropped.apply(params, x, key=key), plain.apply(params, x))
    np.testing.assert_array_equal(dropped.apply(params, x, key=key), dropped.apply(params, x, key=key))


def test_bad_update_rules_are_refused():
    with pytest.raises(ValueError, match="unknown optimizer"):
        Optimizer("adagrad")
    with pytest.raises(ValueError, match="decay_every"):
        Optimizer(schedule="step")
    with pytest.raises(ValueError, match="batch_size"):
        UpdateRule(batch_size=-1)
    with pytest.raises(ValueError, match="dropout"):
        MLP((2, 3), dropout=1.0)
    objective, data, params = quadratic_problem([1.0])
    with pytest.raises(ValueError, match="x_train"):
        run(objective, {"theta": params["theta"][None, None]}, 0.1, data, epochs=1, rule=UpdateRule(batch_size=4))


def test_stability_limits():
    assert Optimizer("gd").stability_limit(0.5) == 4
    assert Optimizer("momentum", momentum=0.9).stability_limit(0.1) == pytest.approx(38)
    assert Optimizer("adam", b1=0.9).stability_limit(1.0) == pytest.approx(38)   # Cohen et al. 2022


WIDE_GAP = [1.0, 2.0, 3.5]


def quadratic_with_examples(n_examples):
    """The quadratic problem with a training set the loss never reads: every minibatch step is theta <- (I - eta A)
    theta, so an epoch of S steps multiplies distances by max|1 - eta a| ** S (eigenvalues a far apart, so that
    the top one dominates within two epochs)."""
    objective, data, params = quadratic_problem(WIDE_GAP)
    data = dict(data, x_train=np.zeros((n_examples, 1)), y_train=np.zeros(n_examples, dtype=int))
    return objective, data, params


def test_records_within_an_epoch_are_the_epoch_records_in_between(blobs):
    """r records an epoch: every r-th record is bit-identical to the run recorded once an epoch (same steps, same
    batches), and the records between follow the steps of the epoch."""
    model = MLP((6, 8, 3))
    objective, ball, data = classification(model), ball_of(model), blobs.arrays()
    rule = UpdateRule(Optimizer("momentum", momentum=0.5), batch_size=20)   # 6 steps an epoch
    once = run(objective, ball, 2.0, data, epochs=10, rule=rule)  # (10 epochs: one length of scan, the engine's
    thrice = run(objective, ball, 2.0, data, epochs=10, rule=rule, records_per_epoch=3)  # shortest, to compile)
    assert thrice.loss.shape[-1] == 3 * 10 + 1 and thrice.epochs == 10 and thrice.per_epoch == 3
    for name in ("loss", "train_accuracy", "test_accuracy", "distance"):
        assert np.array_equal(getattr(once, name), getattr(thrice, name)[..., ::3], equal_nan=True)
    assert not np.array_equal(thrice.loss[..., 1::3], thrice.loss[..., ::3][..., :-1])
    np.testing.assert_array_equal(thrice.time[:4], [0, 1 / 3, 2 / 3, 1])
    assert thrice.network_epochs == once.network_epochs
    with pytest.raises(ValueError, match="divide the 6 step"):
        run(objective, ball, 2.0, data, epochs=2, rule=rule, records_per_epoch=4)
    with pytest.raises(ValueError, match="divide the 1 step"):
        run(objective, ball, 2.0, data, epochs=2, records_per_epoch=2)


@pytest.mark.parametrize("eta", [0.62, 0.7])
def test_minibatch_exponents_per_epoch_match_the_closed_form_at_any_record_rate(eta):
    """S = 8 steps an epoch of GD on the quadratic: lambda = S ln max|1 - eta a| per epoch (1.26 at eta = 0.62,
    2.97 at 0.7), whether recorded once, twice or at every step; recorded once an epoch, an expansion of e^9 over
    three epochs is too fast to resolve, and the fit says so."""
    objective, data, params = quadratic_with_examples(16)
    rule = UpdateRule(Optimizer("sgd"), batch_size=2)
    expected = 8 * np.log(max(abs(1 - eta * a) for a in WIDE_GAP))
    rng = np.random.default_rng(2)
    theta = params["theta"]
    copies = np.stack([theta] + [theta + 1e-8 * rng.uniform(-1, 1, theta.size) for _ in range(3)])
    for r in (1, 2, 8):
        rec = run(objective, {"theta": copies[None]}, eta, data, epochs=6, rule=rule, records_per_epoch=r)
        fit = local_exponent(rec.distance[0], window=(2, 6), records_per_epoch=r)
        assert fit.exponent == pytest.approx(expected, rel=1e-6)
        assert fit.window == (2, 6)
    fast = local_exponent(rec.distance[0], window=(0, 3), records_per_epoch=8)
    assert fast.positive == (expected > 0.05) and not fast.unresolved
    coarse = run(objective, {"theta": copies[None]}, eta, data, epochs=6, rule=rule)
    assert local_exponent(coarse.distance[0], window=(0, 3)).unresolved == (3 * expected > 5)


def test_distances_over_the_whole_state_add_the_momentum_buffer():
    """Heavy ball on the quadratic: over parameters and momentum buffer, the distance equals the parameters' at
    t = 0 (both buffers start at 0), exceeds it after, and grows at the same closed-form rate ln rho."""
    eta, beta = 1.2, 0.9
    objective, data, params = quadratic_problem(EIGENVALUES)
    rule = UpdateRule(Optimizer("momentum", momentum=beta))
    rng = np.random.default_rng(1)
    theta = params["theta"]
    copies = {"theta": np.stack([theta] + [theta + 1e-8 * rng.uniform(-1, 1, theta.size) for _ in range(3)])[None]}
    by_params = run(objective, copies, eta, data, epochs=150, rule=rule)
    by_state = run(objective, copies, eta, data, epochs=150, rule=rule, distance="state")
    assert np.array_equal(by_state.distance[..., 0], by_params.distance[..., 0])
    assert np.all(by_state.distance[..., 1:] > by_params.distance[..., 1:])
    assert local_exponent(by_state.distance[0], window=(60, 150)).exponent == pytest.approx(
        heavy_ball_exponent(eta, beta), abs=1e-3)
    with pytest.raises(ValueError, match="distance must be one of"):
        run(objective, copies, eta, data, epochs=2, distance="momentum")


def test_copies_stopped_by_the_settled_fit_give_the_same_exponents_with_records_within_epochs(blobs):
    """CopiesSettled(plateau, records_per_epoch=r) keeps the plateau in epochs: copies stopped by it give the
    exponents of copies run to the end (to roundoff); a rule counting another r than the run's is refused."""
    from chaosgd.lyapunov import CopiesSettled
    model = MLP((6, 8, 3))
    objective, ball, data = classification(model), ball_of(model, n_initial=4), blobs.arrays()
    rule, r, plateau = UpdateRule(Optimizer("sgd"), batch_size=20), 3, 5
    full = run(objective, ball, 3.0, data, epochs=30, rule=rule, records_per_epoch=r)
    stopped = run(objective, ball, 3.0, data, epochs=30, rule=rule, records_per_epoch=r,
                  stop_copies=CopiesSettled(plateau, records_per_epoch=r))
    assert np.all(stopped.copies_stopped_at >= 0) and stopped.network_epochs < full.network_epochs
    for g in range(4):
        a = local_exponent(full.distance[g], plateau=plateau, records_per_epoch=r)
        b = local_exponent(stopped.distance[g], plateau=plateau, stopped_at=int(stopped.copies_stopped_at[g]),
                           records_per_epoch=r)
        # The same window, and the same exponent to roundoff: with copies stopped the remaining members' products
        # have other shapes, which may change the order of BLAS's sums (last bits), not the fit.
        assert a.window == b.window and b.exponent == pytest.approx(a.exponent, rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="stop_copies counts 1 record"):
        run(objective, ball, 3.0, data, epochs=3, rule=rule, records_per_epoch=r, stop_copies=CopiesSettled(plateau))
