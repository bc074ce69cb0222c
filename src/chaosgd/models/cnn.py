"""The paper's convolutional network (Appendix B, fig. 12)."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from chaosgd.convolution import conv2d_max_pool
from chaosgd.models.base import DTYPES, normal_weights_zero_biases
from chaosgd.precision import float64


@dataclass(frozen=True)
class CNN:
    """Conv(3x3, padding 1) -> ReLU -> 2x2 max-pool, once per entry of ``channels``, then a linear layer.

    With the defaults (28x28x1 input, channels 8 and 16, 10 classes) it has exactly 9,098 parameters.

    Keyword arguments:
        input_shape: ``(height, width, channels)`` of one example; inputs are NHWC, and ``(n, h, w)`` is read as
            one channel.
        channels: output channels of each convolution.
        n_classes: size of the output layer.
        sigma: weights (kernels and the dense matrix) are drawn from N(0, sigma^2), biases are zero. The paper
            writes "weights initialized from N(0, 0.01)"; its public code writes initialisations as PyTorch's
            ``normal_(mean, std)``, so we read 0.01 as the standard deviation: sigma = 0.01 is the default.
    """

    input_shape: tuple[int, int, int] = (28, 28, 1)
    channels: tuple[int, ...] = (8, 16)
    n_classes: int = 10
    sigma: float = 0.01
    dtype: str = "float64"

    def __post_init__(self):
        h, w, _ = self.input_shape
        pools = 2 ** len(self.channels)
        if h % pools or w % pools:
            raise ValueError(f"input height and width must be divisible by 2**len(channels) = {pools}; "
                             f"got input_shape {self.input_shape}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0; got {self.sigma}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}")

    @float64
    def init(self, key: jax.Array):
        h, w, c_in = self.input_shape
        shapes = []
        for c_out in self.channels:
            shapes.append(((3, 3, c_in, c_out), (c_out,)))
            c_in = c_out
        flat = (h // 2 ** len(self.channels)) * (w // 2 ** len(self.channels)) * c_in
        shapes.append(((flat, self.n_classes), (self.n_classes,)))
        return normal_weights_zero_biases(key, shapes, self.sigma, self.dtype)

    @float64
    def apply(self, params, x: jax.Array) -> jax.Array:
        n = x.shape[0]
        # Channels first over the batch, (C, n, H, W): the layout chaosgd.convolution's products deliver.
        h = jnp.moveaxis(x.reshape((n, *self.input_shape)), -1, 0)
        for layer in params[:-1]:
            kernels = jnp.transpose(layer["w"], (3, 2, 0, 1))  # HWIO -> OIHW
            # Pooled before the bias and ReLU, which commute with the maximum (the bias is the same across a window
            # and both are increasing): the same values and derivatives, over a quarter of the entries.
            h = jax.nn.relu(conv2d_max_pool(h, kernels, (2, 2), padding=((1, 1), (1, 1)))
                            + layer["b"][:, None, None, None])
        # Flattened per example as (height, width, channel), the order the dense weights have always had.
        h = jnp.transpose(h, (1, 2, 3, 0)).reshape(n, -1)
        return h @ params[-1]["w"] + params[-1]["b"]
