"""Models: anything with ``init(key) -> params`` and ``apply(params, x) -> logits``.

The engine only sees that interface, so a user's own model (a pair of plain JAX functions, Flax, Equinox, a PyTorch
module through ``from_torch``) works the same way as the built-in ones.
"""

import math

from chaosgd.models.base import FunctionModel, Model, count_parameters, from_equinox, from_flax, weight_mask
from chaosgd.models.cnn import CNN
from chaosgd.models.mlp import MLP, ACTIVATIONS
from chaosgd.models.pytorch import UnsupportedModule, from_torch

ARCHITECTURES = ("mlp", "cnn")


def for_dataset(architecture: str, example_shape: tuple[int, ...], n_classes: int, *, hidden: tuple[int, ...] = (64,),
                activation: str = "tanh", sigma: float | None = None, dtype: str = "float64",
                dropout: float = 0.0) -> Model:
    """The paper's model family sized for a data set: an MLP ``features-hidden...-classes`` or the CNN.

    ``sigma`` defaults to each architecture's paper value (1 for MLPs, 0.01 for the CNN).
    """
    if architecture == "mlp":
        widths = (int(math.prod(example_shape)), *hidden, n_classes)
        return MLP(widths, activation=activation, sigma=1.0 if sigma is None else sigma, dtype=dtype, dropout=dropout)
    if architecture == "cnn":
        if dropout:
            raise ValueError("dropout is an option of the MLP only")
        if len(example_shape) != 3:
            raise ValueError(f"the CNN needs image inputs (height, width, channels); got examples of shape "
                             f"{example_shape}")
        return CNN(input_shape=tuple(example_shape), n_classes=n_classes, sigma=0.01 if sigma is None else sigma,
                   dtype=dtype)
    raise ValueError(f"unknown architecture {architecture!r}; choose one of {list(ARCHITECTURES)}")


__all__ = ["Model", "FunctionModel", "MLP", "CNN", "ACTIVATIONS", "ARCHITECTURES", "count_parameters", "for_dataset",
           "from_equinox", "from_flax", "from_torch", "UnsupportedModule", "weight_mask"]
