"""Convolutions and max pooling as matrix products and memory-bound steps that run at the CPU's speed in float64.

A convolution is one matrix product over unfolded patches (im2col): the kernels ``(O, C * kh * kw)`` times the
patches ``(C * kh * kw, n * Ho * Wo)``, through ``chaosgd.gemm`` — so that an ensemble's kernels against one input
(the data) become one wide BLAS product, and networks that each have their own input one BLAS product each. The
unfolding, its adjoint and the max pooling's bookkeeping are primitives lowered to plain loops (``conv.cc``, built
with ``gemm.cc``); XLA's float64 convolutions and its code for these steps run at a fraction of that speed on a CPU
(``benchmarks/cnn_throughput.py``). Other dtypes, or ``CHAOSGD_GEMM=xla``, get the same functions in jnp (the
reference the tests compare with); on a GPU (the default backend not the CPU) they are XLA's convolution and
``reduce_window`` (cuDNN).

Images are channels-first over the batch: ``(C, n, H, W)`` (the layout in which the product's output arrives),
kernels ``(O, C / groups, kh, kw)`` as in PyTorch. Results equal ``lax.conv_general_dilated`` and
``lax.reduce_window`` to roundoff (``tests/test_convolution.py``).
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from chaosgd.gemm import ffi_or_xla, gemm

_GEOMETRY = ("kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw", "ho", "wo")


def conv2d(x, w, *, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups: int = 1) -> jax.Array:
    """Cross-correlation of images ``x`` ``(C, n, H, W)`` with kernels ``w`` ``(O, C / groups, kh, kw)``:
    ``(O, n, Ho, Wo)``. ``padding`` is ((top, bottom), (left, right)) of zeros."""
    c, n, h, width = x.shape
    o, c_group, kh, kw = w.shape
    if c != c_group * groups or o % groups:
        raise ValueError(f"conv2d: {c} input channels and kernels {w.shape} do not make {groups} group(s)")
    (pt, pb), (pl, pr) = padding
    ho = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (width + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"conv2d: kernels {w.shape[2:]} do not fit in images {x.shape[2:]} with this padding")
    if jax.default_backend() != "cpu":  # GPUs have their own convolutions (cuDNN): XLA's
        out = lax.conv_general_dilated(jnp.moveaxis(x, 0, 1), w, tuple(stride), [tuple(p) for p in padding],
                                       rhs_dilation=tuple(dilation), dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                       feature_group_count=groups)
        return jnp.moveaxis(out, 1, 0)
    geometry = dict(kh=kh, kw=kw, sh=stride[0], sw=stride[1], pt=pt, pl=pl, dh=dilation[0], dw=dilation[1], ho=ho,
                    wo=wo)
    outputs = []
    for g in range(groups):
        part = x[g * c_group:(g + 1) * c_group] if groups > 1 else x
        kernels = w[g * (o // groups):(g + 1) * (o // groups)] if groups > 1 else w
        columns = patches_p.bind(part[None], **geometry)[0]  # (C kh kw, n Ho Wo)
        outputs.append(gemm(kernels.reshape(kernels.shape[0], -1), columns))
    out = outputs[0] if groups == 1 else jnp.concatenate(outputs)
    return out.reshape(o, n, ho, wo)


def max_pool(x, window) -> jax.Array:
    """The maximum over non-overlapping ``window`` = (ph, pw) windows of the last two axes (stride = window, rows
    and columns beyond a whole window left out, as PyTorch's and the VALID reduce_window do). Its derivative goes
    to the first maximum of each window; a NaN counts as the maximum."""
    if len(window) != 2 or any(int(size) != size or size < 1 for size in window):
        raise ValueError(f"max_pool: window must be two integers >= 1 (rows, columns); got {window!r}")
    if jax.default_backend() != "cpu":
        dims = (1,) * (x.ndim - 2) + tuple(window)
        return lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "VALID")
    return pool_p.bind(x, ph=int(window[0]), pw=int(window[1]))[0]


# -- references in jnp: the lowering off the CPU library, and what the tests compare with ------------------------

def _patches_reference(x, *, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo):
    b, c, n, h, width = x.shape
    pb = max(0, (ho - 1) * sh + dh * (kh - 1) + 1 - h - pt)
    pr = max(0, (wo - 1) * sw + dw * (kw - 1) + 1 - width - pl)
    padded = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pt, pb), (pl, pr)))
    rows = [padded[..., i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
            for i in range(kh) for j in range(kw)]
    return jnp.stack(rows, axis=2).reshape(b, c * kh * kw, n * ho * wo)


def _fold_reference(columns, *, h, w, **geometry):
    b, rows, _ = columns.shape
    c = rows // (geometry["kh"] * geometry["kw"])
    n = columns.shape[2] // (geometry["ho"] * geometry["wo"])
    image = jax.ShapeDtypeStruct((b, c, n, h, w), columns.dtype)
    return jax.linear_transpose(partial(_patches_reference, **geometry), image)(columns)[0]


def _windows(x, ph, pw):
    """``(..., Ho, Wo, ph * pw)``: each window's entries, in the order of their offsets a * pw + b."""
    *lead, h, w = x.shape
    ho, wo = h // ph, w // pw
    x = x[..., :ho * ph, :wo * pw].reshape(*lead, ho, ph, wo, pw)
    return jnp.moveaxis(x, -3, -2).reshape(*lead, ho, wo, ph * pw)


def _pool_reference(x, *, ph, pw):
    windows = _windows(x, ph, pw)
    nan = jnp.isnan(windows)
    where = jnp.where(nan.any(-1), jnp.argmax(nan, -1), jnp.argmax(windows, -1)).astype(jnp.int32)
    return [jnp.take_along_axis(windows, where[..., None], axis=-1)[..., 0], where]


def _gather_reference(t, where, *, ph, pw):
    return jnp.take_along_axis(_windows(t, ph, pw), where[..., None], axis=-1)[..., 0]


def _scatter_reference(ct, where, *, ph, pw, h, w):
    *lead, ho, wo = ct.shape
    placed = jax.nn.one_hot(where, ph * pw, dtype=ct.dtype) * ct[..., None]  # (..., Ho, Wo, ph * pw)
    placed = jnp.moveaxis(placed.reshape(*lead, ho, wo, ph, pw), -2, -3).reshape(*lead, ho * ph, wo * pw)
    return jnp.pad(placed, [(0, 0)] * len(lead) + [(0, h - ho * ph), (0, w - wo * pw)])


# -- the primitives ---------------------------------------------------------------------------------------------

def _primitive(name, reference, abstract, attributes, multiple_results=False):
    p = Primitive(name)
    p.multiple_results = multiple_results
    p.def_impl(partial(_eager, p))
    p.def_abstract_eval(abstract)
    mlir.register_lowering(p, mlir.lower_fun(reference, multiple_results=multiple_results))
    mlir.register_lowering(p, ffi_or_xla(name, reference, attributes=attributes, multiple_results=multiple_results),
                           platform="cpu")
    return p


def _eager(p, *args, **params):
    return _compiled(p, tuple(sorted(params.items())))(*args)


@lru_cache(maxsize=256)
def _compiled(p, params):
    return jax.jit(lambda *args: p.bind(*args, **dict(params)))


def _patches_abstract(x, *, kh, kw, ho, wo, **_):
    b, c, n = x.shape[:3]
    return jax.core.ShapedArray((b, c * kh * kw, n * ho * wo), x.dtype)


def _fold_abstract(columns, *, kh, kw, ho, wo, h, w, **_):
    b, rows, length = columns.shape
    return jax.core.ShapedArray((b, rows // (kh * kw), length // (ho * wo), h, w), columns.dtype)


def _pooled_shape(shape, ph, pw):
    return (*shape[:-2], shape[-2] // ph, shape[-1] // pw)


_WINDOW = ("ph", "pw")
patches_p = _primitive("chaosgd_patches", _patches_reference, _patches_abstract, _GEOMETRY)
fold_p = _primitive("chaosgd_fold", _fold_reference, _fold_abstract, _GEOMETRY)
pool_p = _primitive("chaosgd_pool", _pool_reference,
                    lambda x, *, ph, pw: [jax.core.ShapedArray(_pooled_shape(x.shape, ph, pw), x.dtype),
                                          jax.core.ShapedArray(_pooled_shape(x.shape, ph, pw), jnp.int32)],
                    _WINDOW, multiple_results=True)
gather_p = _primitive("chaosgd_pool_gather", _gather_reference,
                      lambda t, where, *, ph, pw: jax.core.ShapedArray(where.shape, t.dtype), _WINDOW)
scatter_p = _primitive("chaosgd_pool_scatter", _scatter_reference,
                       lambda ct, where, *, ph, pw, h, w: jax.core.ShapedArray((*ct.shape[:-2], h, w), ct.dtype),
                       _WINDOW)


# Unfolding and folding are linear and each other's adjoint; gathering at the maxima is linear in what it gathers
# from, with scattering as its adjoint. So reverse mode, forward mode and their compositions all stay here.
def _geometry(params):
    return {k: params[k] for k in _GEOMETRY}


ad.deflinear2(patches_p, lambda ct, x, **g: [fold_p.bind(ct, **g, h=x.aval.shape[3], w=x.aval.shape[4])])
ad.deflinear2(fold_p, lambda ct, columns, **g: [patches_p.bind(ct, **_geometry(g))])
ad.defjvp(gather_p, lambda dt, t, where, **p: gather_p.bind(dt, where, **p), None)


def _pool_jvp(primals, tangents, *, ph, pw):
    """Along dx, the pooled values change by dx at each window's maximum; the positions do not change."""
    (x,), (dx,) = primals, tangents
    y, where = pool_p.bind(x, ph=ph, pw=pw)
    dy = ad.Zero(jax.typeof(y).to_tangent_aval()) if type(dx) is ad.Zero else gather_p.bind(dx, where, ph=ph, pw=pw)
    return [y, where], [dy, ad.Zero(jax.typeof(where).to_tangent_aval())]


ad.primitive_jvps[pool_p] = _pool_jvp
ad.defjvp(scatter_p, lambda dct, ct, where, **p: scatter_p.bind(dct, where, **p), None)


def _gather_transpose(ct, t, where, *, ph, pw):
    if type(ct) is ad.Zero:
        return [ad.Zero(t.aval), None]
    return [scatter_p.bind(ct, where, ph=ph, pw=pw, h=t.aval.shape[-2], w=t.aval.shape[-1]), None]


def _scatter_transpose(ct, dct, where, *, ph, pw, h, w):
    if type(ct) is ad.Zero:
        return [ad.Zero(dct.aval), None]
    return [gather_p.bind(ct, where, ph=ph, pw=pw), None]


ad.primitive_transposes[gather_p] = _gather_transpose
ad.primitive_transposes[scatter_p] = _scatter_transpose


def _batch_images(p):
    """Batching of a primitive whose first axis is already a batch of images: the new axis merged into it."""
    def rule(args, dims, **params):
        (x,), (d,) = args, dims
        x = jnp.moveaxis(x, d, 0)
        out = p.bind(x.reshape(-1, *x.shape[2:]), **params)
        return out.reshape(*x.shape[:2], *out.shape[1:]), 0  # (no -1: a batch may be empty)
    return rule


def _batch_leading(p):
    """Batching of the pooling primitives, which take any leading axes: the batch axis first, operands repeated
    where only one is batched."""
    def rule(args, dims, **params):
        size = next(x.shape[d] for x, d in zip(args, dims) if d is not None)
        args = [jnp.broadcast_to(x, (size, *x.shape)) if d is None else jnp.moveaxis(x, d, 0)
                for x, d in zip(args, dims)]
        out = p.bind(*args, **params)
        return out, [0] * len(out) if p.multiple_results else 0
    return rule


batching.primitive_batchers[patches_p] = _batch_images(patches_p)
batching.primitive_batchers[fold_p] = _batch_images(fold_p)
for _p in (pool_p, gather_p, scatter_p):
    batching.primitive_batchers[_p] = _batch_leading(_p)
