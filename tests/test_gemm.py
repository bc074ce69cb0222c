"""The BLAS matrix product (chaosgd.gemm): values against numpy, every derivative and batching rule against XLA's own
product, the custom call actually in the compiled program, the fall-back without a compiler, and the engine's records
unchanged by the route."""

import os
import subprocess
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from chaosgd import MLP, classification, epsilon_ball, initial_conditions, run
from chaosgd.gemm import _xla, blas_available, gemm

FLAGS = [(False, False), (True, False), (False, True), (True, True)]


def operands(m, k, n, trans_a, trans_b, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    return a, b


CUSTOM_CALL = 'custom_call_target="chaosgd_gemm"'


def compiled_text(fn, *args):
    return jax.jit(fn).lower(*args).compile().as_text()


@pytest.mark.parametrize("trans_a,trans_b", FLAGS)
@pytest.mark.parametrize("m,k,n", [(7, 5, 3), (1, 1, 1), (64, 300, 33), (0, 4, 3), (4, 0, 3), (4, 3, 0)])
def test_product_equals_numpys(m, k, n, trans_a, trans_b):
    a, b = operands(m, k, n, trans_a, trans_b)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b)
    got = jax.jit(partial(gemm, trans_a=trans_a, trans_b=trans_b))(a, b)
    assert got.shape == (m, n) and got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13 * max(k, 1))


def test_float64_products_run_the_custom_call_and_others_xlas_product():
    assert blas_available()  # a compiler is on this machine: the other tests here exercise the custom call
    a, b = operands(6, 5, 4, False, False)
    assert CUSTOM_CALL in compiled_text(gemm, a, b)
    assert CUSTOM_CALL not in compiled_text(gemm, a.astype(np.float32), b.astype(np.float32))
    np.testing.assert_allclose(gemm(a.astype(np.float32), b.astype(np.float32)), a @ b, rtol=1e-5)
    # mixed dtypes are promoted, as with @
    assert gemm(a.astype(np.float32), b).dtype == jnp.float64


def test_shapes_that_do_not_fit_are_refused():
    with pytest.raises(TypeError, match="inner sizes"):
        gemm(np.ones((3, 4)), np.ones((5, 2)))
    with pytest.raises(TypeError, match="two matrices"):
        gemm(np.ones(3), np.ones((3, 2)))


@pytest.mark.parametrize("trans_a,trans_b", FLAGS)
def test_derivatives_of_every_order_match_finite_differences_and_xlas_product(trans_a, trans_b):
    a, b = operands(4, 3, 5, trans_a, trans_b, seed=1)
    flags = dict(trans_a=trans_a, trans_b=trans_b)
    check_grads(partial(gemm, **flags), (a, b), order=2, modes=("fwd", "rev"))

    def scalar(product):
        return lambda x, y: jnp.sum(jnp.tanh(product(x, y, **flags)) ** 2)

    ours, xlas = scalar(gemm), scalar(_xla)
    da, db = operands(4, 3, 5, trans_a, trans_b, seed=2)
    for derivative in (jax.grad, jax.hessian):
        got, want = derivative(ours, argnums=(0, 1))(a, b), derivative(xlas, argnums=(0, 1))(a, b)
        for got, want in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # forward over reverse, as the sharpness and tangent estimators use it
    hvp = jax.jvp(jax.grad(ours, argnums=(0, 1)), (a, b), (da, db))
    hvp_xla = jax.jvp(jax.grad(xlas, argnums=(0, 1)), (a, b), (da, db))
    for got, want in zip(jax.tree.leaves(hvp), jax.tree.leaves(hvp_xla)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("trans_a,trans_b", FLAGS)
@pytest.mark.parametrize("in_axes", [(None, 0), (None, 1), (None, 2), (0, None), (1, None), (2, None), (0, 0)])
def test_batched_products_equal_one_product_each(trans_a, trans_b, in_axes):
    m, k, n, size = 5, 4, 3, 6
    rng = np.random.default_rng(3)
    a, b = operands(m, k, n, trans_a, trans_b, seed=4)
    batched = [x if axis is None else np.moveaxis(rng.standard_normal((size, *x.shape)), 0, axis)
               for x, axis in zip((a, b), in_axes)]
    flags = dict(trans_a=trans_a, trans_b=trans_b)
    got = jax.jit(jax.vmap(partial(gemm, **flags), in_axes=in_axes))(*batched)
    want = jax.vmap(partial(_xla, **flags), in_axes=in_axes)(*batched)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    # the gradient of a batched product (the ensemble's backward pass) as well
    loss = jax.vmap(lambda x, y: jnp.sum(jnp.sin(gemm(x, y, **flags))), in_axes=in_axes)
    loss_xla = jax.vmap(lambda x, y: jnp.sum(jnp.sin(_xla(x, y, **flags))), in_axes=in_axes)
    argnums = tuple(i for i, axis in enumerate(in_axes) if axis is not None)
    got = jax.grad(lambda *xs: loss(*xs).sum(), argnums=argnums)(*batched)
    want = jax.grad(lambda *xs: loss_xla(*xs).sum(), argnums=argnums)(*batched)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("trans_a,trans_b", FLAGS)
def test_networks_with_their_own_inputs_take_one_blas_product_each_unless_a_side_is_thin(trans_a, trans_b):
    """Both operands batched: BLAS per network (the batched custom call) for sides of 16 and more, XLA's batched
    product where one is thinner (an output layer of a few classes: see gemm._THIN), equal either way, gradients
    too."""
    flags = dict(trans_a=trans_a, trans_b=trans_b)
    for (m, k, n), blas in [((20, 17, 16), True), ((20, 17, 10), False), ((20, 3, 18), False), ((6, 17, 18), False)]:
        a, b = operands(m, k, n, trans_a, trans_b, seed=m + k + n)
        a, b = (np.stack([x, -2 * x, np.cos(x)]) for x in (a, b))
        product = jax.vmap(partial(gemm, **flags))
        assert ('custom_call_target="chaosgd_gemm_batched"' in compiled_text(product, a, b)) is blas
        np.testing.assert_allclose(jax.jit(product)(a, b), jax.vmap(partial(_xla, **flags))(a, b),
                                   rtol=1e-13, atol=1e-13)
        grads = jax.jit(jax.grad(lambda a, b: jnp.sum(jnp.sin(product(a, b))), (0, 1)))(a, b)
        want = jax.grad(lambda a, b: jnp.sum(jnp.sin(jax.vmap(partial(_xla, **flags))(a, b))), (0, 1))(a, b)
        for got, expected in zip(grads, want):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_nested_batches_fold_into_one_wide_custom_call():
    """Groups x members of weights against one data matrix, as the engine's ensemble is."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((50, 7)), rng.standard_normal((3, 4, 7, 6))
    ensemble = jax.vmap(jax.vmap(lambda w: gemm(x, w)))
    np.testing.assert_allclose(jax.jit(ensemble)(w), np.einsum("nk,gmkh->gmnh", x, w), rtol=1e-13, atol=1e-13)
    assert compiled_text(ensemble, w).count(CUSTOM_CALL) == 1


def run_python(code, **env):
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          timeout=300)


CHECK = """
import warnings, jax, numpy as np
jax.config.update("jax_enable_x64", True)  # (the test's own float64 arrays)
from chaosgd.gemm import gemm
a, b = np.arange(12.0).reshape(3, 4), np.arange(8.0).reshape(4, 2)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    text = jax.jit(gemm).lower(a, b).compile().as_text()
    assert np.array_equal(np.asarray(jax.jit(gemm)(a, b)), a @ b)
    assert np.array_equal(np.asarray(jax.jit(gemm)(b.T, a.T)), b.T @ a.T)  # a second program: no second warning
print("custom call" if 'custom_call_target="chaosgd_gemm"' in text else "xla")
print("|".join(str(w.message) for w in caught))
"""


def test_without_a_compiler_a_warning_says_so_and_xlas_product_is_used(tmp_path):
    (tmp_path / "tmp").mkdir()  # no library built earlier in either place it is kept
    done = run_python(CHECK, CXX=str(tmp_path / "no-such-compiler"), XDG_CACHE_HOME=str(tmp_path / "cache"),
                      TMPDIR=str(tmp_path / "tmp"))
    assert done.returncode == 0, done.stderr
    route, warning = done.stdout.splitlines()
    assert route == "xla"
    assert "BLAS matrix product is not available" in warning and "no-such-compiler" in warning
    assert warning.count("not available") == 1  # once, though two programs were compiled


def test_a_cache_folder_others_may_write_to_is_not_used(tmp_path):
    """A library from there could be anyone's: it is built in the user's own temporary folder instead."""
    shared = tmp_path / "cache" / "chaosgd"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    (tmp_path / "tmp").mkdir()
    done = run_python(CHECK, XDG_CACHE_HOME=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "tmp"))
    assert done.stdout.splitlines() == ["custom call", ""], done.stderr
    assert not list(shared.iterdir())
    assert len(list((tmp_path / "tmp" / f"chaosgd-{os.getuid()}").glob("gemm-*.so"))) == 1


def test_a_fresh_cache_builds_the_library_once_and_the_environment_chooses_the_route(tmp_path):
    done = run_python(CHECK, XDG_CACHE_HOME=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["custom call", ""]
    [library] = (tmp_path / "chaosgd").glob("gemm-*.so")
    library.write_bytes(b"not a library")  # e.g. cut short by a full disk: built afresh
    done = run_python(CHECK, XDG_CACHE_HOME=str(tmp_path))
    assert done.stdout.splitlines() == ["custom call", ""], done.stderr
    assert library.read_bytes().startswith(b"\x7fELF")
    done = run_python(CHECK, XDG_CACHE_HOME=str(tmp_path), CHAOSGD_GEMM="xla")
    assert done.stdout.splitlines() == ["xla", ""], done.stderr
    done = run_python(CHECK, XDG_CACHE_HOME=str(tmp_path), CHAOSGD_GEMM="openblas")
    assert done.returncode != 0 and "CHAOSGD_GEMM='openblas'" in done.stderr and "'blas', 'xla'" in done.stderr


def test_the_engines_records_do_not_depend_on_the_route(blobs, monkeypatch):
    """The whole engine (an ensemble of references and copies, test accuracy) on BLAS and on XLA's product: equal up to
    roundoff at a calm eta, where roundoff is not amplified."""
    model = MLP((6, 16, 3), activation="tanh")
    params = epsilon_ball(initial_conditions(model, 3, seed=0), 2, epsilon=1e-6, seed=0)
    etas = np.array([0.05, 0.1, 0.2])  # one per initial condition

    def records():
        jax.clear_caches()
        return run(classification(model), params, etas, blobs.arrays(), epochs=15)

    blas = records()
    monkeypatch.setenv("CHAOSGD_GEMM", "xla")
    xla = records()
    monkeypatch.delenv("CHAOSGD_GEMM")
    jax.clear_caches()
    for name in ("loss", "distance", "test_accuracy"):
        np.testing.assert_allclose(getattr(blas, name), getattr(xla, name), rtol=1e-10, atol=1e-14)
    assert np.ptp(blas.loss[:, :, -1]) > 0  # the records move: the comparison is not of constants
    assert not np.array_equal(blas.loss, xla.loss)  # both routes ran: their sums are ordered differently
