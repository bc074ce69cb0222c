"""float64 where chaosgd computes, and nowhere else.

epsilon-balls of radius 1e-8 need float64, which JAX makes available only with ``jax_enable_x64`` on. chaosgd does not
turn it on for the whole process (that would change every other JAX program in it): each entry point — a function
that makes arrays from what the caller gives it, or starts a computation — runs inside JAX's thread-local
``jax.enable_x64(True)``; a model's ``init`` and ``apply`` and an objective's ``loss`` are entry points too, since
callers use them directly, and so are the functions chaosgd returns for later calls (a Flax or Equinox model's, the
Hessian-vector product). Arrays keep their dtype when the scope ends, so what chaosgd returns stays float64. The
building blocks only traced inside an entry point (``conv2d``, ``gemm``, ``cross_entropy``) have no scope of their own:
called directly with float64 off, they compute in float32 as any JAX code then does (JAX warns when it rounds a
float64 array). The command line, a process that is chaosgd's alone, turns float64 on for the whole process instead
(``whole_process``).
"""

from __future__ import annotations

import functools

import jax

from chaosgd.errors import ChaosgdError


class FloatPrecisionError(ChaosgdError, TypeError):
    """A chaosgd computation was asked for inside a transformation traced without float64."""


def float64(function):
    """``function``, run with JAX's float64 on (unchanged when it already is: the caller's own setting, or an
    enclosing chaosgd call)."""
    @functools.wraps(function)
    def in_float64(*args, **kwargs):
        if jax.config.jax_enable_x64:
            return function(*args, **kwargs)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs))):
            # Inside the caller's own transformation, traced in float32: switching here would mix the two in one
            # program (JAX's errors then name neither), and staying in float32 would round silently.
            raise FloatPrecisionError(
                f"{function.__qualname__} was called inside a JAX transformation (jit, grad, vmap, ...) traced with "
                "JAX's float64 off: chaosgd computes in float64. Turn it on around your code, "
                "with jax.enable_x64(True): ..., or for the whole process, "
                "jax.config.update(\"jax_enable_x64\", True)")
        with jax.enable_x64(True):
            return function(*args, **kwargs)

    in_float64.computes_in_float64 = True  # (checked by the tests: every entry point has it)
    return in_float64


def whole_process() -> None:
    """Turn JAX's float64 on for this process: only in processes that run chaosgd alone."""
    jax.config.update("jax_enable_x64", True)
