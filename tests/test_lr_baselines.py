"""The range-test baselines of the benchmark (benchmarks/lr_baselines.py): ``range_test`` gives what torch-lr-finder
gives when called directly, seeded and repeatable, full batch and minibatch, a float (never None) for every
suggestion; fastai's ``valley`` and ``steep`` rules give the known answers on constructed curves (and fastai's own
answers where fastai is installed)."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch_lr_finder = pytest.importorskip("torch_lr_finder")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from chaosgd.datasets import load_iris  # noqa: E402
from lr_baselines import RangeTest, range_test, steep, valley  # noqa: E402

NUM_ITER = 40
START_LR, END_LR = 1e-4, 100.0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny torch models run ~20x slower with 2 threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def iris():
    return load_iris()


def iris_mlp():
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def direct(data, seed, batch_size):
    """torch-lr-finder called by hand, the way its README does, with the settings range_test promises."""
    from matplotlib.figure import Figure
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(seed)
    module = iris_mlp().double()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)  # start_lr given to range_test instead
    dataset = TensorDataset(torch.tensor(data.x_train, dtype=torch.float64), torch.tensor(data.y_train))
    if batch_size is None:
        loader = DataLoader(dataset, batch_size=len(dataset))
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
    finder = torch_lr_finder.LRFinder(module, optimizer, torch.nn.CrossEntropyLoss())
    finder.range_test(loader, start_lr=START_LR, end_lr=END_LR, num_iter=NUM_ITER, step_mode="exp", smooth_f=0.05,
                      diverge_th=5)
    _, lr = finder.plot(suggest_lr=True, ax=Figure().subplots())
    return finder.history, lr


def examples_seen(n_train, batch_size, steps):
    """Examples in the first ``steps`` batches of a reshuffling loader without drop_last, counted batch by batch."""
    seen, left = 0, n_train
    for _ in range(steps):
        size = min(batch_size, left)
        seen += size
        left = left - size or n_train
    return seen


@pytest.mark.parametrize("batch_size", [None, 32])
def test_range_test_is_torch_lr_finder(iris, batch_size):
    history, lr = direct(iris, seed=3, batch_size=batch_size)
    test = range_test(iris_mlp, iris.x_train, iris.y_train, seed=3, batch_size=batch_size, start_lr=START_LR,
                      end_lr=END_LR, num_iter=NUM_ITER)
    assert isinstance(test, RangeTest)
    np.testing.assert_array_equal(test.lrs, history["lr"])
    np.testing.assert_array_equal(test.losses, history["loss"])
    assert lr is not None and test.suggestion == lr
    n = len(iris.y_train)
    assert test.steps == len(history["lr"]) and test.lrs[0] == pytest.approx(START_LR, rel=1e-12)
    assert test.batch_size == (n if batch_size is None else batch_size)
    assert test.examples == examples_seen(n, test.batch_size, test.steps)
    if batch_size is None:
        assert test.examples == test.steps * n
    assert test.diverged or test.steps == NUM_ITER  # it stops early on divergence only
    for value in (test.suggestion, test.valley, test.steep):
        assert isinstance(value, float) and START_LR <= value <= END_LR
    # fastai's rules on the same curve, in fastai's window (num_iter // 10 first points and 5 last dropped)
    assert test.valley == valley(history["lr"], history["loss"], skip_start=NUM_ITER // 10, skip_end=5)
    assert test.steep == steep(history["lr"], history["loss"], skip_start=NUM_ITER // 10, skip_end=5)


def test_range_test_is_seeded(iris):
    rng = torch.get_rng_state()
    runs = [range_test(iris_mlp, iris.x_train, iris.y_train, seed=seed, batch_size=32, start_lr=START_LR,
                       end_lr=END_LR, num_iter=NUM_ITER) for seed in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's torch RNG is left alone
    a, b, c = runs
    for field in ("lrs", "losses"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.suggestion, a.valley, a.steep, a.steps, a.examples) == (b.suggestion, b.valley, b.steep, b.steps,
                                                                      b.examples)
    assert not np.array_equal(a.losses[:10], c.losses[:10])  # another seed: other weights, other batches
    with pytest.raises(ValueError):
        a.losses[0] = 0.0  # read-only


def test_range_test_restores_the_module(iris):
    torch.manual_seed(0)
    module = iris_mlp().double()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    range_test(lambda: module, iris.x_train, iris.y_train, seed=0, start_lr=START_LR, end_lr=END_LR, num_iter=20)
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])


def test_range_test_never_returns_none(iris):
    # Too few steps for torch-lr-finder's window (10 skipped at the start, 5 at the end, 2 needed): NaN with a reason
    short = range_test(iris_mlp, iris.x_train, iris.y_train, seed=0, start_lr=START_LR, end_lr=END_LR, num_iter=12)
    assert short.steps == 12 and math.isnan(short.suggestion)
    assert any(note.startswith("torch-lr-finder: no suggestion") for note in short.notes)
    assert isinstance(short.valley, float) and isinstance(short.steep, float)
    # Diverging from the first steps: the test stops early, every suggestion is still a float
    wild = range_test(iris_mlp, iris.x_train, iris.y_train, seed=0, batch_size=16, start_lr=30.0, end_lr=1e5,
                      num_iter=NUM_ITER)
    assert wild.diverged and wild.steps < NUM_ITER and any(n.startswith("diverged at step") for n in wild.notes)
    for value in (wild.suggestion, wild.valley, wild.steep):
        assert isinstance(value, float)
    with pytest.raises(ValueError):
        range_test(iris_mlp, iris.x_train, iris.y_train, seed=0, batch_size=0)


# ---- fastai's rules on constructed curves -------------------------------------------------------------------------

X = np.round(np.linspace(-4.0, 1.0, 51), 10)  # log10 of the learning rates: 1e-4 .. 10, 10 points a decade
LRS = 10.0 ** X


def descent_curve():
    """Flat at 1 up to lr 1e-3 (index 10), then down: slope -0.2 a decade to 1e-2, -1 a decade from 1e-2 to
    10^-1.5 (indices 20 .. 25, the steepest), -0.2 a decade to 1e-1 (index 30, loss 0.2), then blowing up."""
    return np.piecewise(X, [X <= -3, (X > -3) & (X <= -2), (X > -2) & (X <= -1.5), (X > -1.5) & (X <= -1), X > -1],
                        [1.0, lambda x: 1 - 0.2 * (x + 3), lambda x: 0.8 - (x + 2), lambda x: 0.3 - 0.2 * (x + 1.5),
                         lambda x: 0.2 * 10 ** (3 * (x + 1))])


@pytest.mark.parametrize("window", [dict(skip_start=0, skip_end=0), dict()])  # dict(): fastai's 51 // 10 and 5
def test_steep_and_valley_on_a_known_descent(window):
    losses = descent_curve()
    assert np.all(np.diff(losses[10:31]) < 0) and np.all(np.diff(losses[30:]) > 0)
    # steep: the left end of a segment of the -1-a-decade stretch (segments 20-21 .. 24-25, equal slopes)
    assert steep(LRS, losses, **window) in set(LRS[20:25])
    # valley: the longest strictly descending stretch is indices 10 .. 30 (the last flat point, then down):
    # L = 21 points ending at e = 30, suggestion at e - L + L // 3 + L // 6 = 19, about its middle
    length, end = 21, 30
    assert valley(LRS, losses, **window) == LRS[end - length + length // 3 + length // 6] == LRS[19]


def test_log_spacing_is_accounted_for():
    # The descent curve on a grid ten times finer in the steepest stretch (1e-2 .. 10^-1.5): per point the loss
    # falls there by 0.01, half the 0.02 per point of the gentle stretches around it, but per decade five times
    # as fast; steep must still find it (a gradient over the point index, as np.gradient(losses), would not).
    x = np.unique(np.round(np.concatenate([X, np.arange(-2.0, -1.5, 0.01)]), 10))
    lrs = 10.0 ** x
    losses = np.interp(x, X, descent_curve())
    fine = (x[:-1] >= -2.0) & (x[1:] <= -1.5)
    assert np.diff(losses)[fine].min() > np.diff(losses).min() + 0.005  # per point, the gentle stretches fall faster
    assert 1e-2 <= steep(lrs, losses, skip_start=0, skip_end=0) < 10 ** -1.5


def test_rules_on_a_rising_curve():
    losses = np.exp(X)  # increasing from the start, and faster and faster
    s = steep(LRS, losses, skip_start=0, skip_end=0)
    v = valley(LRS, losses, skip_start=0, skip_end=0)
    assert isinstance(s, float) and isinstance(v, float)
    assert s == LRS[0]  # steep: the segment where the loss rises least
    assert v == LRS[0]  # valley's fallback (and fastai's): the smallest learning rate
    assert valley(LRS, losses) == LRS[len(LRS) // 10]  # the smallest in fastai's window
    # Only the first two points descend: fastai's index is -1 (the largest learning rate), here the smallest
    assert valley(LRS, np.r_[2.0, 1.0, losses[2:] + 2], skip_start=0, skip_end=0) == LRS[0]


def test_rules_on_short_and_broken_curves():
    assert math.isnan(valley([], [])) and math.isnan(steep([], []))
    assert valley([1e-3], [1.0], skip_end=0) == 1e-3 and math.isnan(steep([1e-3], [1.0], skip_end=0))
    assert math.isnan(valley(LRS[:5], np.ones(5)))  # fastai's window of a 5-point curve is empty
    losses = descent_curve()
    cut = losses.copy()
    cut[27:] = np.nan  # everything from the first non-finite loss on is dropped, as fastai's lr_find does
    for rule in (steep, valley):
        assert rule(LRS, cut, skip_start=0, skip_end=0) == rule(LRS[:27], losses[:27], skip_start=0, skip_end=0)
    with pytest.raises(ValueError):
        valley(LRS[::-1], losses)  # learning rates must increase
    with pytest.raises(ValueError):
        steep(LRS, losses[:-1])


def lds_rule(losses):
    """The valley index from the textbook O(n^2) longest strictly decreasing subsequence (first end on ties)."""
    lds = [1] * len(losses)
    for i in range(len(losses)):
        for j in range(i):
            if losses[j] > losses[i]:
                lds[i] = max(lds[i], lds[j] + 1)
    length = max(lds)
    end = lds.index(length)
    return max(end - length + length // 3 + length // 6, 0)


def test_valley_on_noisy_curves():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 80))
        losses = np.round(np.cumsum(rng.normal(-0.02, 0.1, n)), 1)  # noisy, with many equal values
        lrs = np.geomspace(1e-5, 10, n)
        assert valley(lrs, losses, skip_start=0, skip_end=0) == lrs[lds_rule(list(losses))]


def fastai_curves():
    rng = np.random.default_rng(1)
    curves = [descent_curve(), np.exp(-X) + np.exp(2 * X), np.exp(X)]
    for _ in range(5):  # range-test-like: a noisy descent, then a blow-up
        curves.append(1.5 - np.tanh(X + 2.5) + 0.3 * np.exp(3 * (X - 0.2)) + rng.normal(0, 0.02, X.size))
    return curves


def test_equal_to_fastai():
    schedule = pytest.importorskip("fastai.callback.schedule")

    def fastai(rule, losses):
        return getattr(schedule, rule)(torch.tensor(LRS), torch.tensor(losses), len(LRS))[0]

    for losses in fastai_curves():
        assert valley(LRS, losses, skip_start=0, skip_end=0) == pytest.approx(fastai("valley", losses), rel=1e-12)
        assert steep(LRS, losses, skip_start=0, skip_end=0) == pytest.approx(fastai("steep", losses), rel=1e-12)
    # The one documented difference: only the first two points descend, fastai's index -1 wraps round
    two = np.r_[2.0, 1.0, np.exp(X[2:]) + 2]
    assert fastai("valley", two) == pytest.approx(LRS[-1]) and valley(LRS, two, skip_start=0, skip_end=0) == LRS[0]
