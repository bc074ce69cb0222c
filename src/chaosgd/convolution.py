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

``conv2d_max_pool`` is the two in one, for layers that pool right after the convolution: its input's derivative
(``conv.cc``'s PooledConvX) and, for 3 x 3 or narrow kernels, its kernels' derivative (PooledConvT) are read at the
pooling's maxima alone, instead of scattering the pooled cotangent back to the convolution's size and running
products over it (and folding the input's). A layer of 3 x 3 kernels computes its pooled values in one kernel
(ConvPool), without unfolding patches or writing the convolution's full-size output.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from chaosgd.gemm import ffi_or_xla, gemm

_GEOMETRY = ("kh", "kw", "sh", "sw", "pt", "pl", "dh", "dw", "ho", "wo")


def conv2d(x, w, *, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups: int = 1) -> jax.Array:
    """Cross-correlation of images ``x`` ``(C, n, H, W)`` with kernels ``w`` ``(O, C / groups, kh, kw)``:
    ``(O, n, Ho, Wo)``. ``padding`` is ((top, bottom), (left, right)) of zeros."""
    geometry = _geometry_of(x, w, stride, padding, dilation, groups)
    if jax.default_backend() != "cpu":  # GPUs have their own convolutions (cuDNN): XLA's
        out = lax.conv_general_dilated(jnp.moveaxis(x, 0, 1), w, tuple(stride), [tuple(p) for p in padding],
                                       rhs_dilation=tuple(dilation), dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                       feature_group_count=groups)
        return jnp.moveaxis(out, 1, 0)
    return _conv(x, w, geometry, groups)


def _geometry_of(x, w, stride, padding, dilation, groups) -> dict:
    c, n, h, width = x.shape
    o, c_group, kh, kw = w.shape
    if c != c_group * groups or o % groups:
        raise ValueError(f"conv2d: {c} input channels and kernels {w.shape} do not make {groups} group(s)")
    (pt, pb), (pl, pr) = padding
    ho = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (width + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"conv2d: kernels {w.shape[2:]} do not fit in images {x.shape[2:]} with this padding")
    return dict(kh=kh, kw=kw, sh=stride[0], sw=stride[1], pt=pt, pl=pl, dh=dilation[0], dw=dilation[1], ho=ho, wo=wo)


def _conv(x, w, geometry, groups=1):
    """conv2d on the CPU route: per group, the kernels times the unfolded patches."""
    o, c_group = w.shape[:2]
    outputs = []
    for g in range(groups):
        part = x[g * c_group:(g + 1) * c_group] if groups > 1 else x
        kernels = w[g * (o // groups):(g + 1) * (o // groups)] if groups > 1 else w
        outputs.append(_product(kernels, patches_p.bind(part[None], **geometry)[0], geometry))
    return outputs[0] if groups == 1 else jnp.concatenate(outputs, axis=0)


def _product(kernels, columns, geometry):
    """Kernels ``(O, C, kh, kw)`` times unfolded patches ``(C kh kw, n Ho Wo)``: ``(O, n, Ho, Wo)``."""
    ho, wo = geometry["ho"], geometry["wo"]
    out = gemm(kernels.reshape(kernels.shape[0], -1), columns)
    return out.reshape(kernels.shape[0], columns.shape[1] // (ho * wo), ho, wo)


# Kernels other than 3 x 3 see at most this many input entries (C * kh * kw) for conv2d_max_pool to take their
# derivative at the maxima (general loops, each tap checked against the edges); wider ones go through the
# full-size scatter and a BLAS product over the patches, faster per tap than those loops. 3 x 3 kernels of any
# width have kernels of their own (zero-bordered, a maximum's taps as runs of channels), and every width reads the
# input's derivative at the maxima.
_TAPS_AT_MAXIMA = 9


def conv2d_max_pool(x, w, window, *, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1)) -> jax.Array:
    """``max_pool(conv2d(x, w, ...), window)``: the same values and derivatives (one group).

    The derivatives are taken at the pooling's maxima alone. A pooled cotangent ``g`` gives the input's gradient
    as each kernel's taps times ``g`` placed around its window's maximum, and (for 3 x 3 kernels, or others of
    at most ``_TAPS_AT_MAXIMA`` taps) the kernels' gradient as ``sum g * x[taps of the window's maximum]``, where
    the composition scatters ``g`` back to the convolution's full size (``ph * pw`` times the entries, all but one
    per window zero) and runs products over it: for the input, a product with ``C * kh * kw`` rows per column and
    a fold of it back to the images (``ph * pw`` times the multiplications, and the largest memory-bound steps of
    a pooled layer's backward pass). 3 x 3 kernels also compute their pooled values without unfolding patches or
    writing the convolution's full-size output. Other kernels take their values, and wider ones their own
    derivative, through the patches (a BLAS product). Other dtypes and other backends get the composition itself.
    """
    if len(window) != 2 or any(int(size) != size or size < 1 for size in window):
        raise ValueError(f"max_pool: window must be two integers >= 1 (rows, columns); got {window!r}")
    geometry = _geometry_of(x, w, stride, padding, dilation, 1)
    if jax.default_backend() != "cpu" or jnp.result_type(x, w) != jnp.float64:
        return max_pool(conv2d(x, w, stride=stride, padding=padding, dilation=dilation), window)
    return _conv_pool(x, w, tuple(geometry.items()), int(window[0]), int(window[1]))


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv_pool(x, w, geometry, ph, pw):
    return _pooled(x, w, dict(geometry), ph, pw)[0]


def _pooled(x, w, g, ph, pw):
    """The pooled convolution, its maxima's positions and the unfolded patches (None where none were made): in one
    kernel for 3 x 3 kernels (neither the patches nor the full-size output written; speed of the paper's CNN:
    docs/benchmarks.md), else a product over the patches and the pooling."""
    if (g["kh"], g["kw"], g["dh"], g["dw"]) == (3, 3, 1, 1):
        y, where = conv_pool_p.bind(x[None], w[None], **g, ph=ph, pw=pw)
        return y[0], where[0], None
    columns = patches_p.bind(x[None], **g)[0]
    return *pool_p.bind(_product(w, columns, g), ph=ph, pw=pw), columns


def _conv_pool_jvp(geometry, ph, pw, primals, tangents):
    """Along (dx, dw): the pooled convolution changes by conv(dx, w) + conv(x, dw) at each window's maximum; the
    first read at the maxima alone, the second too for 3 x 3 or narrow kernels, else through the full-size product
    of dw with the patches and a gather. (Their transposes are the gradients of conv2d_max_pool's docstring.)"""
    (x, w), (dx, dw) = primals, tangents
    g = dict(geometry)
    y, where, columns = _pooled(x, w, g, ph, pw)  # (any unfolding serves the value and the kernels' product)
    dy = jnp.zeros_like(y)
    if type(dw) is not SymbolicZero:
        if columns is None or x.shape[0] * g["kh"] * g["kw"] <= _TAPS_AT_MAXIMA:
            dy = dy + pooled_conv_p.bind(x[None], dw[None], where[None], **g, ph=ph, pw=pw)[0]
        else:
            dy = dy + gather_p.bind(_product(dw, columns, g), where, ph=ph, pw=pw)
    if type(dx) is not SymbolicZero:
        dy = dy + pooled_conv_p.bind(dx[None], w[None], where[None], **g, ph=ph, pw=pw)[0]
    return y, dy


_conv_pool.defjvp(_conv_pool_jvp, symbolic_zeros=True)


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


def _pooled_conv_reference(x, k, where, *, ph, pw, **geometry):
    b, o = k.shape[:2]
    full = jnp.matmul(k.reshape(b, o, -1), _patches_reference(x, **geometry))  # (B, O, n Ho Wo); Bx = 1 broadcasts
    return _gather_reference(full.reshape(b, o, x.shape[2], geometry["ho"], geometry["wo"]), where, ph=ph, pw=pw)


def _conv_pool_reference(x, k, *, ph, pw, **geometry):
    b, o = k.shape[:2]
    full = jnp.matmul(k.reshape(b, o, -1), _patches_reference(x, **geometry))  # (B, O, n Ho Wo); Bx = 1 broadcasts
    return _pool_reference(full.reshape(b, o, x.shape[2], geometry["ho"], geometry["wo"]), ph=ph, pw=pw)


def _pooled_conv_t_reference(x, ct, where, **params):
    kernels = jax.ShapeDtypeStruct((*ct.shape[:2], x.shape[1], params["kh"], params["kw"]), ct.dtype)
    return jax.linear_transpose(lambda k: _pooled_conv_reference(x, k, where, **params), kernels)(ct)[0]


def _pooled_conv_x_reference(k, ct, where, *, h, w, **params):
    images = jax.ShapeDtypeStruct((k.shape[0], k.shape[2], ct.shape[2], h, w), ct.dtype)
    return jax.linear_transpose(lambda x: _pooled_conv_reference(x, k, where, **params), images)(ct)[0]


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

_POOLED = (*_GEOMETRY, "ph", "pw")
pooled_conv_p = _primitive("chaosgd_pooled_conv", _pooled_conv_reference,
                           lambda x, k, where, **_: jax.core.ShapedArray(where.shape, x.dtype), _POOLED)
# (images, kernels) -> the pooled convolution and its maxima's positions, for one channel and 3 x 3 kernels.
conv_pool_p = _primitive("chaosgd_conv_pool", _conv_pool_reference,
                         lambda x, k, *, ho, wo, ph, pw, **_: [
                             jax.core.ShapedArray((*k.shape[:2], x.shape[2], ho // ph, wo // pw), x.dtype),
                             jax.core.ShapedArray((*k.shape[:2], x.shape[2], ho // ph, wo // pw), jnp.int32)],
                         _POOLED, multiple_results=True)
pooled_conv_t_p = _primitive("chaosgd_pooled_conv_t", _pooled_conv_t_reference,
                             lambda x, ct, where, *, kh, kw, **_: jax.core.ShapedArray(
                                 (*ct.shape[:2], x.shape[1], kh, kw), x.dtype), _POOLED)
# (kernels, cotangent, positions; h, w: the images' size) -> the images' derivative: the transpose in x of both.
pooled_conv_x_p = _primitive("chaosgd_pooled_conv_x", _pooled_conv_x_reference,
                             lambda k, ct, where, *, h, w, **_: jax.core.ShapedArray(
                                 (k.shape[0], k.shape[2], ct.shape[2], h, w), ct.dtype), _POOLED)


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


# The convolution read at the maxima, pooled_conv(x, k), is bilinear in the images and the kernels; its transpose
# in the kernels, pooled_conv_t(x, ct), and in the images, pooled_conv_x(k, ct), are bilinear too, and each of the
# three is a transpose of the others (the positions are constants). So every derivative of every order stays here.
def _x_transpose(p):
    def transpose(ct, x, other, where, **params):
        if type(ct) is ad.Zero:
            return [None if not ad.is_undefined_primal(x) else ad.Zero(x.aval),
                    None if not ad.is_undefined_primal(other) else ad.Zero(other.aval), None]
        if ad.is_undefined_primal(x):
            kernels, pooled = (other, ct) if p is pooled_conv_p else (ct, other)
            dx = pooled_conv_x_p.bind(kernels, pooled, where, **params, h=x.aval.shape[3], w=x.aval.shape[4])
            return [dx.sum(0, keepdims=True) if x.aval.shape[0] < dx.shape[0] else dx, None, None]  # (shared x)
        partner = pooled_conv_t_p if p is pooled_conv_p else pooled_conv_p
        return [None, partner.bind(x, ct, where, **params), None]
    return transpose


def _images_transpose(ct, k, pooled, where, *, h, w, **params):
    if type(ct) is ad.Zero:
        return [None if not ad.is_undefined_primal(k) else ad.Zero(k.aval),
                None if not ad.is_undefined_primal(pooled) else ad.Zero(pooled.aval), None]
    if ad.is_undefined_primal(k):
        return [pooled_conv_t_p.bind(ct, pooled, where, **params), None, None]
    return [None, pooled_conv_p.bind(ct, k, where, **params), None]


for _p in (pooled_conv_p, pooled_conv_t_p, pooled_conv_x_p):
    ad.defjvp(_p, lambda d, a, b, where, _p=_p, **params: _p.bind(d, b, where, **params),
              lambda d, a, b, where, _p=_p, **params: _p.bind(a, d, where, **params), None)
ad.primitive_transposes[pooled_conv_p] = _x_transpose(pooled_conv_p)
ad.primitive_transposes[pooled_conv_t_p] = _x_transpose(pooled_conv_t_p)
ad.primitive_transposes[pooled_conv_x_p] = _images_transpose


def _batch_pooled(p):
    """Batching of the convolution read at the maxima: the new axis merged into the batch of kernels (or
    cotangents) and positions; images shared by the whole batch (a leading axis of 1: the data) stay shared."""
    def rule(args, dims, **params):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        lead = lambda a, d: jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)  # noqa: E731
        (x, other, where), (dx, *_) = args, dims
        other, where = lead(other, dims[1]), lead(where, dims[2])
        b = other.shape[1]
        if dx is not None or x.shape[0] != 1:
            x = lead(x, dx)
            x = jnp.broadcast_to(x, (size, b, *x.shape[2:])).reshape(size * b, *x.shape[2:])
        out = p.bind(x, other.reshape(size * b, *other.shape[2:]), where.reshape(size * b, *where.shape[2:]),
                     **params)
        return out.reshape(size, b, *out.shape[1:]), 0
    return rule


def _batch_all(p):
    """Batching of the images' derivative at the maxima, whose operands all lead with the batch of networks: the
    new axis merged into it."""
    def rule(args, dims, **params):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        args = [jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
                for a, d in zip(args, dims)]
        b = args[0].shape[1]
        out = p.bind(*(a.reshape(size * b, *a.shape[2:]) for a in args), **params)
        return out.reshape(size, b, *out.shape[1:]), 0
    return rule


for _p in (pooled_conv_p, pooled_conv_t_p):
    batching.primitive_batchers[_p] = _batch_pooled(_p)
batching.primitive_batchers[pooled_conv_x_p] = _batch_all(pooled_conv_x_p)


def _conv_pool_jvp_rule(primals, tangents, **params):
    """Along (dx, dk), the pooled values change by the convolution of (dx, k) and of (x, dk) read at each window's
    maximum; the positions do not change."""
    (x, k), (dx, dk) = primals, tangents
    y, where = conv_pool_p.bind(x, k, **params)
    parts = []
    if type(dx) is not ad.Zero:
        parts.append(pooled_conv_p.bind(dx, k, where, **params))
    if type(dk) is not ad.Zero:
        parts.append(pooled_conv_p.bind(x, dk, where, **params))
    dy = sum(parts[1:], parts[0]) if parts else ad.Zero(jax.typeof(y).to_tangent_aval())
    return [y, where], [dy, ad.Zero(jax.typeof(where).to_tangent_aval())]


def _batch_conv_pool(args, dims, **params):
    """Batching of the pooled convolution: the new axis merged into the batch of kernels; images shared by the
    whole batch (a leading axis of 1: the data) stay shared."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    (x, k), (dx, dk) = args, dims
    k = jnp.broadcast_to(k, (size, *k.shape)) if dk is None else jnp.moveaxis(k, dk, 0)
    b = k.shape[1]
    if dx is not None or x.shape[0] != 1:
        x = jnp.broadcast_to(x, (size, *x.shape)) if dx is None else jnp.moveaxis(x, dx, 0)
        x = jnp.broadcast_to(x, (size, b, *x.shape[2:])).reshape(size * b, *x.shape[2:])
    y, where = conv_pool_p.bind(x, k.reshape(size * b, *k.shape[2:]), **params)
    return [y.reshape(size, b, *y.shape[1:]), where.reshape(size, b, *where.shape[1:])], [0, 0]


ad.primitive_jvps[conv_pool_p] = _conv_pool_jvp_rule
batching.primitive_batchers[conv_pool_p] = _batch_conv_pool
