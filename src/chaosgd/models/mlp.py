"""Multilayer perceptron, the paper's main architecture (784-64-10 tanh on MNIST)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from chaosgd.gemm import gemm
from chaosgd.models.base import DTYPES, normal_weights_zero_biases
from chaosgd.precision import float64

ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}


@dataclass(frozen=True)
class MLP:
    """Dense layers ``widths[0] -> widths[1] -> ... -> widths[-1]``, ``activation`` between them, linear output.

    Keyword arguments:
        widths: layer sizes including input and output, e.g. ``(784, 64, 10)`` (50,890 parameters).
        activation: ``"tanh"`` (default, the paper's), ``"sigmoid"`` or ``"relu"``.
        sigma: weights are drawn from N(0, sigma^2), biases are zero; sigma = 1 is the paper's choice.
        dtype: parameter dtype, float64 by default (epsilon = 1e-8 perturbations need it).
        dropout: probability of zeroing each hidden unit in training (inverted dropout: survivors scaled by
            1/(1 - dropout)); masks come from the key ``apply`` is given, none without one (evaluation).

    Inputs of any shape ``(n, ...)`` are flattened to ``(n, widths[0])``.
    """

    widths: tuple[int, ...]
    activation: str = "tanh"
    sigma: float = 1.0
    dtype: str = "float64"
    dropout: float = 0.0

    def __post_init__(self):
        widths = tuple(int(w) for w in self.widths)
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"MLP widths must be at least two positive sizes (input, ..., output); got {self.widths}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0; got {self.sigma}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        object.__setattr__(self, "widths", widths)

    @float64
    def init(self, key: jax.Array):
        shapes = [((n_in, n_out), (n_out,)) for n_in, n_out in zip(self.widths[:-1], self.widths[1:])]
        return normal_weights_zero_biases(key, shapes, self.sigma, self.dtype)

    @float64
    def apply(self, params, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        h = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(params):
            # The first product, the data against each network's weights, is most of an epoch's work: it runs on
            # the CPU's BLAS (chaosgd.gemm), which also folds an ensemble's weights into one wide product.
            z = (gemm(h, layer["w"]) if i == 0 else h @ layer["w"]) + layer["b"]
            if i == len(params) - 1:
                return z
            h = act(z)
            if key is not None and self.dropout > 0:
                keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1 - self.dropout, h.shape)
                h = jnp.where(keep, h / (1 - self.dropout), 0)
