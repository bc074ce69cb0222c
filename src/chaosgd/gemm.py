"""The matrix product ``op(a) @ op(b)`` as a JAX primitive that runs on the CPU's BLAS inside compiled programs.

XLA's own float64 product on CPU reaches about half of what OpenBLAS does at the engine's shapes (X of 60,000 x 784
times K stacked weight matrices; ``benchmarks/blas_routes.py``), and that product is most of a network-epoch. Here
the product is a primitive with the rules that every estimator needs: JVP and transpose (reverse mode, forward over
reverse for the sharpness, the tangent's linearisation) and batching, which folds a batch of right-hand matrices
into one wide product (``X @ [W_1 ... W_K]``, ``X^T @ [G_1 ... G_K]``), the shape OpenBLAS is fastest at; two
batched matrices give ``batched_gemm``, one BLAS product per entry.

On CPU, float64 products are lowered to an XLA FFI custom call (``gemm.cc``, compiled at first use with the system's
C++ compiler into a cache folder, in one library with ``conv.cc``'s kernels for ``chaosgd.convolution``) that calls
the ``dgemm`` scipy ships; any other platform or dtype, or a machine
without a compiler (a warning says so, once), gets XLA's own product. Results differ from XLA's product only in the
order of the sums (last-bit roundoff). ``CHAOSGD_GEMM=xla`` in the environment turns the BLAS route off; it is read
when a program is compiled, so set it before the process starts (programs compiled earlier keep their route).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import stat
import subprocess
import tempfile
import threading
import uuid
import warnings
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

ROUTES = ("blas", "xla")
_TARGET = "chaosgd_gemm"
_INT_MAX = 2**31 - 1  # scipy's BLAS takes 32-bit sizes

gemm_p = Primitive("chaosgd_gemm")
batched_p = Primitive("chaosgd_gemm_batched")  # op(a[i]) @ op(b[i]) for a leading batch axis of both


def gemm(a, b, *, trans_a: bool = False, trans_b: bool = False) -> jax.Array:
    """``op(a) @ op(b)`` for 2-D ``a`` and ``b``, where ``op(x)`` is ``x.T`` if its flag is set, else ``x``."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    dtype = jnp.result_type(a, b)
    return gemm_p.bind(a.astype(dtype), b.astype(dtype), trans_a=bool(trans_a), trans_b=bool(trans_b))


def batched_gemm(a, b, *, trans_a: bool = False, trans_b: bool = False) -> jax.Array:
    """``op(a[i]) @ op(b[i])`` for 3-D ``a`` and ``b`` whose first axes (the batch) agree: one BLAS product per
    entry (``vmap`` of ``gemm`` over two batched matrices lands here)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    dtype = jnp.result_type(a, b)
    return batched_p.bind(a.astype(dtype), b.astype(dtype), trans_a=bool(trans_a), trans_b=bool(trans_b))


def route() -> str:
    """``"blas"`` (the default) or ``"xla"``, from the environment variable ``CHAOSGD_GEMM``."""
    chosen = os.environ.get("CHAOSGD_GEMM", "blas").strip().lower() or "blas"
    if chosen not in ROUTES:
        raise ValueError(f"CHAOSGD_GEMM={os.environ['CHAOSGD_GEMM']!r} is not a route of the matrix product; "
                         f"choose one of {list(ROUTES)}")
    return chosen


def blas_available() -> bool:
    """Whether float64 products on CPU run on BLAS here: the route is ``"blas"`` and the library built and loaded."""
    return route() == "blas" and _library() is not None


def route_in_use() -> str:
    """The route float64 products take in this process on its default backend: "blas" or "xla" (what run folders
    and benchmarks record)."""
    return "blas" if jax.default_backend() == "cpu" and blas_available() else "xla"


def _xla(a, b, *, trans_a, trans_b):
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


def _abstract(a, b, *, trans_a, trans_b):
    if a.ndim != 2 or b.ndim != 2:
        raise TypeError(f"gemm takes two matrices; got shapes {a.shape} and {b.shape}")
    m, k = a.shape[::-1] if trans_a else a.shape
    inner, n = b.shape[::-1] if trans_b else b.shape
    if k != inner or a.dtype != b.dtype:
        raise TypeError(f"gemm: op(a) is {m} x {k} ({a.dtype}), op(b) is {inner} x {n} ({b.dtype}): "
                        "the inner sizes and the dtypes must agree")
    return jax.core.ShapedArray((m, n), a.dtype)


@partial(jax.jit, static_argnames=("trans_a", "trans_b"))
def _eager(a, b, *, trans_a, trans_b):
    return gemm_p.bind(a, b, trans_a=trans_a, trans_b=trans_b)


gemm_p.def_impl(_eager)
gemm_p.def_abstract_eval(_abstract)


def _xla_batched(a, b, *, trans_a, trans_b):
    return jnp.matmul(jnp.swapaxes(a, 1, 2) if trans_a else a, jnp.swapaxes(b, 1, 2) if trans_b else b)


def _abstract_batched(a, b, *, trans_a, trans_b):
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise TypeError(f"batched_gemm takes two batches of matrices of one size; got shapes {a.shape} and {b.shape}")
    c = _abstract(jax.core.ShapedArray(a.shape[1:], a.dtype), jax.core.ShapedArray(b.shape[1:], b.dtype),
                  trans_a=trans_a, trans_b=trans_b)
    return jax.core.ShapedArray((a.shape[0], *c.shape), a.dtype)


@partial(jax.jit, static_argnames=("trans_a", "trans_b"))
def _eager_batched(a, b, *, trans_a, trans_b):
    return batched_p.bind(a, b, trans_a=trans_a, trans_b=trans_b)


batched_p.def_impl(_eager_batched)
batched_p.def_abstract_eval(_abstract_batched)


# Transposes: with C = op(A) op(B), the cotangent of A is ct op(B)^T (or its transpose when A enters transposed),
# that of B is op(A)^T ct (or its transpose). Each is again one product, so second derivatives stay on BLAS too.
def _transposes(product):
    def ct_a(ct, a, b, *, trans_a, trans_b):
        if trans_a:
            return product(b, ct, trans_a=trans_b, trans_b=True)
        return product(ct, b, trans_b=not trans_b)

    def ct_b(ct, a, b, *, trans_a, trans_b):
        if trans_b:
            return product(ct, a, trans_a=True, trans_b=trans_a)
        return product(a, ct, trans_a=not trans_a)
    return ct_a, ct_b


ad.defbilinear(gemm_p, *_transposes(gemm))
ad.defbilinear(batched_p, *_transposes(batched_gemm))


def _batch(args, dims, *, trans_a, trans_b):
    """One matrix shared and the other batched (an ensemble's weights against the data): one wide product whose
    columns (or rows) are the batch's products side by side. Both batched (networks that each have their own
    input): one BLAS product per network, or XLA's batched product where a side is thinner than ``_THIN``."""
    (a, b), (da, db) = args, dims
    if da is None:
        size = b.shape[db]
        if trans_b:  # each op(B_i) = B_i^T: stack the B_i as rows, (K n, k)
            stacked = jnp.moveaxis(b, db, 0)
            n = stacked.shape[1]
            wide = stacked.reshape(size * n, stacked.shape[2])
        else:  # stack the B_i as columns, (k, K n)
            stacked = jnp.moveaxis(b, db, 1)
            n = stacked.shape[2]
            wide = stacked.reshape(stacked.shape[0], size * n)
        out = gemm(a, wide, trans_a=trans_a, trans_b=trans_b)
        return out.reshape(out.shape[0], size, n), 1
    if db is None:
        size = a.shape[da]
        if trans_a:  # each op(A_i) = A_i^T: stack the A_i as columns, (k, K m)
            stacked = jnp.moveaxis(a, da, 1)
            m = stacked.shape[2]
            tall = stacked.reshape(stacked.shape[0], size * m)
        else:  # stack the A_i as rows, (K m, k)
            stacked = jnp.moveaxis(a, da, 0)
            m = stacked.shape[1]
            tall = stacked.reshape(size * m, stacked.shape[2])
        out = gemm(tall, b, trans_a=trans_a, trans_b=trans_b)
        return out.reshape(size, m, out.shape[1]), 0
    a, b = jnp.moveaxis(a, da, 0), jnp.moveaxis(b, db, 0)
    if min(*a.shape[1:], *b.shape[1:]) < _THIN:
        return _xla_batched(a, b, trans_a=trans_a, trans_b=trans_b), 0
    return batched_gemm(a, b, trans_a=trans_a, trans_b=trans_b), 0


# Per-network products with a side (rows, columns or the sum's length) thinner than this go to XLA: a BLAS call
# gains little there, and after each call OpenBLAS's threads spin on the cores for a while, slowing the kernels
# that follow (the paper's CNN written in torch, whose Linear onto 10 classes goes through gemm: 0.84x the speed of
# chaosgd's CNN, whose dense layer is XLA's product; about 1.0x with that layer on XLA, or with
# OPENBLAS_THREAD_TIMEOUT=4; benchmarks/cnn_throughput.py --torch, docs/benchmarks.md).
_THIN = 16


def _batch_batched(args, dims, *, trans_a, trans_b):
    """A batch of batches: the new batch axis merged into the existing one (an unbatched operand repeated)."""
    size = next(x.shape[d] for x, d in zip(args, dims) if d is not None)
    a, b = (jnp.broadcast_to(x, (size, *x.shape)) if d is None else jnp.moveaxis(x, d, 0)
            for x, d in zip(args, dims))
    out = batched_gemm(a.reshape(-1, *a.shape[2:]), b.reshape(-1, *b.shape[2:]), trans_a=trans_a, trans_b=trans_b)
    return out.reshape(size, a.shape[1], *out.shape[1:]), 0  # (no -1: a batch may be empty)


batching.primitive_batchers[gemm_p] = _batch
batching.primitive_batchers[batched_p] = _batch_batched


def ffi_or_xla(target: str, reference, *, attributes: tuple[str, ...] | None = None, multiple_results: bool = False):
    """A CPU lowering: the library's FFI ``target`` for float64 operands whose sizes fit in int when the BLAS
    route is on and the library loaded, else ``reference`` (a jnp function of the same arguments) through XLA.
    ``attributes``: the parameters the FFI handler takes (default all)."""
    lower_ffi, lower_xla = jax.ffi.ffi_lowering(target), mlir.lower_fun(reference, multiple_results=multiple_results)

    def lower(ctx, *args, **params):
        avals = [*ctx.avals_in, *ctx.avals_out]
        floats = [aval for aval in avals if jnp.issubdtype(aval.dtype, jnp.floating)]
        if (all(aval.dtype == np.float64 for aval in floats)
                and max(max(aval.shape, default=0) for aval in avals) <= _INT_MAX and blas_available()):
            given = params if attributes is None else {k: params[k] for k in attributes}
            return lower_ffi(ctx, *args, **given)
        return lower_xla(ctx, *args, **params)
    return lower


mlir.register_lowering(gemm_p, mlir.lower_fun(_xla, multiple_results=False))
mlir.register_lowering(gemm_p, ffi_or_xla(_TARGET, _xla), platform="cpu")
mlir.register_lowering(batched_p, mlir.lower_fun(_xla_batched, multiple_results=False))
mlir.register_lowering(batched_p, ffi_or_xla("chaosgd_gemm_batched", _xla_batched), platform="cpu")


_lock = threading.Lock()
_loaded: dict = {}  # "library": the loaded ctypes library, or None once building or loading it failed


def _library():
    """The custom call's library, built, loaded and registered with XLA on first use; None where that failed."""
    with _lock:
        if "library" not in _loaded:
            _loaded["library"] = None
            try:
                path = _build()
                try:
                    _loaded["library"] = _load(path)
                except OSError:  # a broken file (a full disk, a foreign build): built afresh once
                    path.unlink(missing_ok=True)
                    _loaded["library"] = _load(_build())
            except Exception as error:  # no compiler, no scipy BLAS, a read-only disk...: XLA's product still works
                warnings.warn(f"chaosgd: the BLAS matrix product is not available ({error}); using XLA's own "
                              "product, slower on CPU (docs/benchmarks.md)", RuntimeWarning, stacklevel=2)
        return _loaded["library"]


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chaosgd"


def _private(path: Path, *, folder: bool) -> bool:
    """Whether ``path`` is this user's own (not a link) and nobody else may write to it: a library from there is
    loaded into the process."""
    try:
        status = os.lstat(path)
    except OSError:
        return False
    kind = stat.S_ISDIR if folder else stat.S_ISREG
    return kind(status.st_mode) and status.st_uid == os.getuid() and not status.st_mode & 0o022


def _folders():
    """Folders the library may be kept in: the user's cache folder, else one of the user's own in the temporary
    folder; created where missing, and only if private."""
    for folder in (cache_folder(), Path(tempfile.gettempdir()) / f"chaosgd-{os.getuid()}"):
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            continue
        if _private(folder, folder=True):
            yield folder


def _tag(sources: list[Path], include: str) -> str:
    """What the library depends on: its sources, jax's and jaxlib's versions, the FFI headers it was compiled
    against, the compiler with its flags and the machine. A change of any builds a new one."""
    import jaxlib

    headers = sorted((Path(include) / "xla" / "ffi" / "api").glob("*.h"))
    parts = [*(source.read_bytes() for source in sources), jax.__version__.encode(), jaxlib.__version__.encode(),
             include.encode(), os.environ.get("CXX", "c++").encode(), " ".join(_FLAGS).encode(),
             platform.machine().encode(),
             *(h.read_bytes() for h in headers)]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


# Portable flags: the library may be loaded on any machine of the architecture. -O3, and -O3 -march=native, ran the
# CNN no faster (benchmarks/cnn_throughput.py on this 2-core CPU, 2026-12-06: 0.79 and 0.73 network-epochs/s against
# 0.81 with -O2, one run each; the time is in memory traffic, not in the loops' arithmetic).
_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-pthread")
_SOURCES = ("gemm.cc", "conv.cc")  # the products, and the convolutions' memory-bound steps (chaosgd.convolution)
_TARGETS = ("chaosgd_gemm", "chaosgd_gemm_batched", "chaosgd_patches", "chaosgd_fold", "chaosgd_pool",
            "chaosgd_pool_gather", "chaosgd_pool_scatter", "chaosgd_pooled_conv", "chaosgd_conv_pool",
            "chaosgd_pooled_conv_t", "chaosgd_pooled_conv_x")


def _build() -> Path:
    sources = [Path(__file__).with_name(name) for name in _SOURCES]
    include = jax.ffi.include_dir()
    name = f"gemm-{_tag(sources, include)}.so"
    folders = list(_folders())
    for folder in folders:
        if _private(folder / name, folder=False):
            return folder / name
    writable = [folder for folder in folders if os.access(folder, os.W_OK)]
    if not writable:
        raise RuntimeError(f"no private, writable folder of this user's for the compiled library (tried "
                           f"{cache_folder()} and the temporary folder)")
    folder = writable[0]
    # Compiled under a unique name, then renamed: processes building at once never load a part of a file.
    partial_file = folder / f".{name}-{uuid.uuid4().hex[:12]}"
    compiler = os.environ.get("CXX", "c++")
    try:
        try:
            done = subprocess.run([compiler, *_FLAGS, f"-I{include}",
                                   *map(str, sources), "-o", str(partial_file)], capture_output=True, text=True,
                                  timeout=600)
        except FileNotFoundError:
            raise RuntimeError(f"no C++ compiler {compiler!r} (set CXX to one)") from None
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[-500:]}")
        os.chmod(partial_file, 0o755)
        os.replace(partial_file, folder / name)
    finally:
        partial_file.unlink(missing_ok=True)  # after a failure, a time-out or Ctrl-C
    return folder / name


def _load(path: Path):
    import scipy.linalg.cython_blas as cython_blas

    capsule = cython_blas.__pyx_capi__["dgemm"]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
    library = ctypes.CDLL(str(path))
    library.chaosgd_set_dgemm.argtypes = [ctypes.c_void_p]
    library.chaosgd_set_dgemm(address)
    for target in _TARGETS:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)), platform="cpu")
    return library
