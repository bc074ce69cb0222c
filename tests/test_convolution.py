"""chaosgd.convolution against XLA's own convolution and pooling (lax.conv_general_dilated, lax.reduce_window): values,
gradients, batching over an ensemble and Hessian-vector products, on the CPU library's route and on the jnp
reference route (CHAOSGD_GEMM=xla); and the CNN and torch convolutions built on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from chaosgd import CNN, classification, epsilon_ball, initial_conditions, run
from chaosgd.convolution import conv2d, conv2d_max_pool, max_pool

GEOMETRIES = [  # stride, ((top, bottom), (left, right)), dilation, groups, output channels
    ((1, 1), ((1, 1), (1, 1)), (1, 1), 1, 4),
    ((2, 1), ((0, 2), (1, 0)), (1, 2), 1, 5),
    ((1, 3), ((2, 2), (0, 0)), (2, 1), 3, 6),
]


def xla_conv(x, w, stride, padding, dilation, groups):
    out = lax.conv_general_dilated(jnp.moveaxis(x, 0, 1), w, stride, padding, rhs_dilation=dilation,
                                   dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=groups)
    return jnp.moveaxis(out, 1, 0)


def xla_pool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


@pytest.fixture(params=["blas", "xla"])
def route(request, monkeypatch):
    monkeypatch.setenv("CHAOSGD_GEMM", request.param)  # read when a program is compiled: fresh functions below
    return request.param


# Every geometry on the library's route; the jnp reference route (CHAOSGD_GEMM=xla) on the first.
CASES = [("blas", *g) for g in GEOMETRIES] + [("xla", *GEOMETRIES[0])]


def close(a, b, tol=1e-12):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol * float(np.abs(y).max()))


@pytest.mark.parametrize("route_name, stride, padding, dilation, groups, out", CASES)
def test_convolution_and_its_derivatives_equal_xlas(monkeypatch, route_name, stride, padding, dilation, groups, out):
    monkeypatch.setenv("CHAOSGD_GEMM", route_name)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 4, 9, 8)))  # (C, n, H, W)
    w = jnp.asarray(rng.standard_normal((out, 3 // groups, 3, 2)))
    ours = lambda x, w: conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)  # noqa: E731
    theirs = lambda x, w: xla_conv(x, w, stride, padding, dilation, groups)  # noqa: E731
    close(jax.jit(ours)(x, w), theirs(x, w))

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w)) ** 2)
    close(jax.jit(jax.grad(loss(ours), (0, 1)))(x, w), jax.grad(loss(theirs), (0, 1))(x, w))
    # An ensemble of kernels on one input (one wide product) and networks with their own inputs (one product each).
    ws, xs = jnp.stack([w, -0.5 * w]), jnp.stack([x, 2 * x])
    close(jax.jit(jax.vmap(jax.grad(loss(ours), 1), (None, 0)))(x, ws),
          jax.vmap(jax.grad(loss(theirs), 1), (None, 0))(x, ws))
    close(jax.jit(jax.vmap(jax.grad(loss(ours), (0, 1))))(xs, ws), jax.vmap(jax.grad(loss(theirs), (0, 1)))(xs, ws))
    # Forward over reverse (the sharpness' Hessian-vector products).
    hvp = lambda conv: jax.jvp(lambda w: jax.grad(loss(conv), 1)(x, w), (w,), (jnp.cos(w),))[1]  # noqa: E731
    close(jax.jit(lambda: hvp(ours))(), hvp(theirs), 1e-11)


def test_max_pooling_and_its_derivatives_equal_xlas(route):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 3, 9, 8)))  # an odd height: the last row is left out, as VALID does
    ours = lambda x: max_pool(x, (2, 2))  # noqa: E731
    close(jax.jit(ours)(x), xla_pool(x), 0)
    loss = lambda pool: lambda x: jnp.sum(jnp.sin(pool(x)) ** 2)  # noqa: E731
    close(jax.jit(jax.grad(loss(ours)))(x), jax.grad(loss(xla_pool))(x), 0)
    close(jax.jit(jax.vmap(jax.grad(loss(ours))))(jnp.stack([x, -x])), jax.vmap(jax.grad(loss(xla_pool)))(
        jnp.stack([x, -x])), 0)
    close(jax.jit(lambda: jax.jvp(jax.grad(loss(ours)), (x,), (jnp.cos(x),))[1])(),
          jax.jvp(jax.grad(loss(xla_pool)), (x,), (jnp.cos(x),))[1], 1e-14)
    # A NaN wins its window (a diverged network stays NaN), and its neighbours' windows are untouched.
    pooled = np.asarray(jax.jit(ours)(x.at[0, 0, 0, 1].set(jnp.nan)))
    assert np.isnan(pooled[0, 0, 0, 0]) and np.isfinite(pooled).sum() == pooled.size - 1
    for window in [(0, 2), (2,), (1.5, 2)]:
        with pytest.raises(ValueError, match="window must be two integers >= 1"):
            max_pool(x, window)


POOLED_GEOMETRIES = [  # kernel (kh, kw), stride, padding, dilation: 3 x 3 (the zero-bordered path, with strides and
    # uneven padding too), and the general one
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((3, 3), (2, 1), ((2, 0), (0, 3)), (1, 1)),
    ((3, 2), (2, 1), ((0, 2), (1, 0)), (1, 2)),
]


@pytest.mark.parametrize("route_name, channels, kernel, stride, padding, dilation",
                         [("blas", c, *g) for g in POOLED_GEOMETRIES for c in (1, 3)]
                         + [("blas", 8, *POOLED_GEOMETRIES[1])]  # (a width whose loops are unrolled)
                         + [("xla", 1, *POOLED_GEOMETRIES[0])])
def test_convolution_pooled_at_its_maxima_equals_xlas_composition(monkeypatch, route_name, channels, kernel, stride,
                                                                  padding, dilation):
    """conv2d_max_pool's derivatives read at the maxima (the input's always, the kernels' for 3 x 3 kernels or at
    most 9 taps; other kernels of three channels take the kernels' through the patches): values, gradients in the
    images and the kernels, an ensemble of kernels on one input, networks with their own inputs, and Hessian-vector
    products, against XLA's convolution followed by reduce_window."""
    monkeypatch.setenv("CHAOSGD_GEMM", route_name)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((channels, 3, 11, 9)))  # (C, n, H, W): windows cut off at the edges too
    w = jnp.asarray(rng.standard_normal((4, channels, *kernel)))
    ours = lambda x, w: conv2d_max_pool(x, w, (2, 2), stride=stride, padding=padding, dilation=dilation)  # noqa: E731
    theirs = lambda x, w: xla_pool(xla_conv(x, w, stride, padding, dilation, 1))  # noqa: E731
    close(jax.jit(ours)(x, w), theirs(x, w), 1e-14)  # (3 x 3: summed in a kernel of its own, no product)
    # A NaN in an image (a diverged network) wins every window it reaches, as in XLA's pooling.
    nan_x = x.at[0, 0, 2, 3].set(jnp.nan)
    assert np.isnan(theirs(nan_x, w)).any()
    np.testing.assert_array_equal(np.isnan(jax.jit(ours)(nan_x, w)), np.isnan(theirs(nan_x, w)))

    def loss(f):
        return lambda x, w: jnp.sum(jnp.sin(f(x, w)) ** 2)
    close(jax.jit(jax.grad(loss(ours), (0, 1)))(x, w), jax.grad(loss(theirs), (0, 1))(x, w))
    ws, xs = jnp.stack([w, -0.5 * w, w[::-1]]), jnp.stack([x, 2 * x, -x])
    close(jax.jit(jax.vmap(jax.grad(loss(ours), 1), (None, 0)))(x, ws),
          jax.vmap(jax.grad(loss(theirs), 1), (None, 0))(x, ws))
    close(jax.jit(jax.vmap(jax.grad(loss(ours), (0, 1))))(xs, ws), jax.vmap(jax.grad(loss(theirs), (0, 1)))(xs, ws))
    # One input shared by an ensemble, differentiated in it too: the networks' parts of its gradient summed.
    shared = lambda f: lambda x, ws: loss(f)(x, ws[0]) + jnp.sum(jax.vmap(f, (None, 0))(x, ws[1:]))  # noqa: E731
    close(jax.jit(jax.grad(shared(ours), (0, 1)))(x, ws), jax.grad(shared(theirs), (0, 1))(x, ws))
    # Forward over reverse in the kernels (the sharpness), and along the images and the kernels at once.
    hvp = lambda f: jax.jvp(lambda w: jax.grad(loss(f), 1)(x, w), (w,), (jnp.cos(w),))[1]  # noqa: E731
    close(jax.jit(lambda: hvp(ours))(), hvp(theirs), 1e-11)
    both = lambda f: jax.jvp(jax.grad(loss(f), (0, 1)), (x, w), (jnp.cos(x), jnp.cos(w)))[1]  # noqa: E731
    close(jax.jit(lambda: both(ours))(), both(theirs), 1e-11)
    # Reverse over reverse (a gradient of a gradient's norm), through every transpose of the three.
    twice = lambda f: jax.grad(lambda x, w: sum(jnp.sum(d ** 2) for d in jax.grad(loss(f), (0, 1))(x, w)),  # noqa: E731
                               (0, 1))
    close(jax.jit(twice(ours))(x, w), twice(theirs)(x, w), 1e-11)


@pytest.mark.parametrize("window, channels", [((3, 2), 1), ((1, 4), 1), ((2, 2), 1), ((2, 2), 3), ((3, 2), 3)])
def test_a_layer_pooled_in_one_kernel_equals_the_convolution_then_the_pooling(window, channels):
    """3 x 3 kernels (conv.cc's ConvPool; one channel as on the data, or three as after a first layer) against
    conv2d then max_pool (a product over the patches, then the pooling): windows of other shapes, kernels not a
    multiple of four, images shared by the networks or their own, and small integers, so that every sum is exact
    and ties are many (the first maximum wins, a NaN from an infinity times a zero tap wins its window): the same
    values, bit for bit, and the same positions (the gradients, read at them)."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.integers(-2, 3, (channels, 3, 11, 9)).astype(float))
    ws = jnp.asarray(rng.integers(-1, 2, (2, 3, channels, 3, 3)).astype(float))  # 2 networks of 3 kernels
    fused = lambda x, w: conv2d_max_pool(x, w, window, padding=((1, 1), (1, 1)))  # noqa: E731
    composed = lambda x, w: max_pool(conv2d(x, w, padding=((1, 1), (1, 1))), window)  # noqa: E731
    with_infinities = x.at[0, 1, 4, 4].set(jnp.inf).at[0, 2, 0, 0].set(-jnp.inf)
    ours = jax.jit(jax.vmap(fused, (None, 0)))(with_infinities, ws)
    assert np.isnan(ours).any() and np.isinf(ours).any()
    np.testing.assert_array_equal(ours, jax.vmap(composed, (None, 0))(with_infinities, ws))
    xs = jnp.stack([x, -x])
    np.testing.assert_array_equal(jax.jit(jax.vmap(fused))(xs, ws), jax.vmap(composed)(xs, ws))
    weights = jnp.asarray(rng.integers(-3, 4, ours.shape[1:]).astype(float))
    grad = lambda f: jax.vmap(jax.grad(lambda x, w: jnp.sum(f(x, w) * weights), (0, 1)))  # noqa: E731
    for a, b in zip(jax.jit(grad(fused))(xs, ws), grad(composed)(xs, ws)):  # (in the images, in the kernels)
        np.testing.assert_array_equal(a, b)


def _cnn_through_xla(model, params, x):
    """The CNN as chaosgd computed it up to 0.8.0: XLA's convolution and reduce_window, NHWC."""
    h = x.reshape((x.shape[0], *model.input_shape))
    for layer in params[:-1]:
        h = lax.conv_general_dilated(h, layer["w"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        h = lax.reduce_window(jax.nn.relu(h + layer["b"]), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return h.reshape(h.shape[0], -1) @ params[-1]["w"] + params[-1]["b"]


def test_the_cnn_trains_as_through_xlas_convolutions_to_roundoff():
    model = CNN(input_shape=(8, 8, 1), channels=(3, 4), n_classes=3, sigma=0.3)
    rng = np.random.default_rng(2)
    data = {"x_train": jnp.asarray(rng.random((40, 64))), "y_train": jnp.asarray(rng.integers(0, 3, 40)),
            "x_test": jnp.asarray(rng.random((30, 64))), "y_test": jnp.asarray(rng.integers(0, 3, 30))}
    params = model.init(jax.random.PRNGKey(0))
    close(jax.jit(model.apply)(params, data["x_train"]), _cnn_through_xla(model, params, data["x_train"]))
    ours, theirs = classification(model), classification(type("XlaCNN", (), {
        "init": model.init, "apply": lambda self, p, x: _cnn_through_xla(model, p, x)})())
    grad = lambda objective: jax.grad(lambda p: objective.loss(p, data)[0])(params)  # noqa: E731
    close(jax.jit(lambda: grad(ours))(), grad(theirs))
    # Trained in the engine, whole and over chunks of examples: the same records to roundoff outside chaos.
    ensemble = epsilon_ball(initial_conditions(model, 2), 1, epsilon=1e-6)
    whole = run(ours, ensemble, 0.5, data, epochs=6)
    reference = run(theirs, ensemble, 0.5, data, epochs=6)
    chunked = run(ours, ensemble, 0.5, data, epochs=6, examples_per_chunk=16, groups_per_chunk=1)
    for other in (reference, chunked):
        for name, atol in (("loss", 0), ("test_accuracy", 0), ("distance", 1e-13)):
            np.testing.assert_allclose(getattr(other, name), getattr(whole, name), rtol=1e-10, atol=atol)


def test_torch_convolutions_and_pooling_match_torch_in_value_and_gradient():
    torch = pytest.importorskip("torch")
    from chaosgd.models.pytorch import from_torch

    torch.manual_seed(0)
    # 'same' padding with an even kernel (PyTorch pads one more after), dilation, stride, groups, 1-D pooling.
    net = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 4, padding="same", dilation=2), torch.nn.Tanh(), torch.nn.MaxPool1d(2),
        torch.nn.Conv1d(4, 6, 3, stride=2, groups=2), torch.nn.Flatten(), torch.nn.Linear(6 * 3, 3)).double()
    x = torch.randn(5, 2, 16, dtype=torch.float64)
    model = from_torch(net, x, init="weights")
    params = model.init(jax.random.PRNGKey(0))
    inputs = jnp.asarray(x.numpy())
    np.testing.assert_allclose(jax.jit(model.apply)(params, inputs), net(x).detach().numpy(), rtol=1e-12,
                               atol=1e-13)
    ours = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, inputs) ** 2)))(params)
    (net(x) ** 2).sum().backward()
    theirs = dict(net.named_parameters())
    assert set(ours) == set(theirs)
    for name, grad in ours.items():
        np.testing.assert_allclose(grad, theirs[name].grad.numpy(), rtol=1e-11, atol=1e-12)


def pooled_gradients_digest() -> str:
    """A digest of the bits of a pooled 3 x 3 layer's values and gradients (eight channels, networks with their own
    images and an ensemble on shared ones), for comparing processes that split the kernels' work differently."""
    import hashlib
    rng = np.random.default_rng(11)
    layer = lambda x, w: conv2d_max_pool(x, w, (2, 2), padding=((1, 1), (1, 1)))  # noqa: E731
    loss = lambda x, w: jnp.sum(jnp.sin(layer(x, w)) ** 2)  # noqa: E731
    parts = []
    for channels in (8, 1):  # (ConvPool's two instances: any channels, and one)
        xs = jnp.asarray(rng.standard_normal((2, channels, 70, 9, 10)))
        ws = jnp.asarray(rng.standard_normal((2, 5, channels, 3, 3)))
        parts += [jax.jit(jax.vmap(layer))(xs, ws), *jax.jit(jax.vmap(jax.grad(loss, (0, 1))))(xs, ws),
                  *jax.jit(jax.grad(lambda x, ws: jnp.sum(jax.vmap(loss, (None, 0))(x, ws)), (0, 1)))(xs[0], ws)]
    return hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in parts)).hexdigest()


# The kernels split their work over threads (OMP_NUM_THREADS, else the cores); the test processes run with one
# each (tests/conftest.py), so the split is checked here in a process of its own, with 3 threads (uneven shares):
# the results to roundoff against XLA, and the same bits as this process's for a pooled layer's.
THREADED = """
import os, sys
sys.path.insert(0, sys.argv[1])
import jax
jax.config.update("jax_enable_x64", True)  # (as conftest.py does for the tests' own arrays)
import test_convolution as t

class Env:
    def setenv(self, name, value):
        os.environ[name] = value

t.test_convolution_and_its_derivatives_equal_xlas(Env(), "blas", *t.GEOMETRIES[2])
t.test_max_pooling_and_its_derivatives_equal_xlas("blas")
for channels, geometry in [(1, t.POOLED_GEOMETRIES[0]), (3, t.POOLED_GEOMETRIES[0]), (3, t.POOLED_GEOMETRIES[1])]:
    t.test_convolution_pooled_at_its_maxima_equals_xlas_composition(Env(), "blas", channels, *geometry)
print("threads:", os.environ["OMP_NUM_THREADS"])
print(t.pooled_gradients_digest())
"""


def test_the_kernels_split_over_threads_give_the_same_results():
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, OMP_NUM_THREADS="3", CHAOSGD_GEMM="blas")
    done = subprocess.run([sys.executable, "-c", THREADED, str(Path(__file__).parent)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    threads, digest = done.stdout.strip().splitlines()
    assert threads == "threads: 3"  # (this process: tests/conftest.py's one, unless told otherwise)
    assert digest == pooled_gradients_digest()


# ConvPool has a plain and an AVX copy of the same code (conv.cc), chosen by the CPU: the same operations in the
# same order, so the same bits. CHAOSGD_NO_AVX runs the plain one on an AVX machine, in a process of its own.
PLAIN = """
import sys
sys.path.insert(0, sys.argv[1])
import jax
jax.config.update("jax_enable_x64", True)
import test_convolution as t
from chaosgd import gemm
print(t.pooled_gradients_digest())
print("avx:", gemm._library().chaosgd_conv_pool_avx())
"""


def test_the_plain_copy_of_the_pooled_kernel_gives_the_avx_copys_bits(monkeypatch):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from chaosgd import gemm

    monkeypatch.setenv("CHAOSGD_GEMM", "blas")  # (this process's digest on the kernels too, as the other's)
    library = gemm._library()
    if library is None:
        pytest.skip("no compiled kernels here (no compiler): neither copy runs")
    if not library.chaosgd_conv_pool_avx():
        pytest.skip("this process runs the plain copy (no AVX here, or CHAOSGD_NO_AVX set): nothing to compare")
    env = dict(os.environ, CHAOSGD_NO_AVX="1", CHAOSGD_GEMM="blas")
    done = subprocess.run([sys.executable, "-c", PLAIN, str(Path(__file__).parent)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    digest, copy = done.stdout.strip().splitlines()
    assert copy == "avx: 0"  # (the switch took: the plain copy ran there)
    assert digest == pooled_gradients_digest()
