"""Models: anything with ``init(key) -> params`` and ``apply(params, x) -> logits``.

The engine only sees that interface, so a user's own JAX model (a pair of plain functions, Flax, Equinox) works the
same way as the built-in ones.
"""

from chaosgd.models.base import Model, count_parameters, weight_mask
from chaosgd.models.cnn import CNN
from chaosgd.models.mlp import MLP, ACTIVATIONS

__all__ = ["Model", "MLP", "CNN", "ACTIVATIONS", "count_parameters", "weight_mask"]
