"""chaosgd: chaos in the training of neural networks, by full-batch gradient descent (the paper's) and beyond.

Importing chaosgd enables JAX's float64 (``jax_enable_x64``): epsilon-balls of radius 1e-8 need it.
"""

import jax

jax.config.update("jax_enable_x64", True)

from chaosgd.engine import run  # noqa: E402
from chaosgd.errors import ChaosgdError  # noqa: E402
from chaosgd.lyapunov import local_exponent, network_exponent  # noqa: E402
from chaosgd.sharpness import top_eigenvalue, top_eigenvalues, track_sharpness  # noqa: E402
from chaosgd.tangent import tangent_exponents  # noqa: E402
from chaosgd.training_time import time_to_accuracy  # noqa: E402
from chaosgd.ensemble import check_epsilon, epsilon_ball, initial_conditions  # noqa: E402
from chaosgd.models import CNN, MLP, count_parameters  # noqa: E402
from chaosgd.objective import Objective, classification  # noqa: E402
from chaosgd.records import Records  # noqa: E402
from chaosgd.sweetspot import find_sweet_spot  # noqa: E402
from chaosgd.experiments import PRESETS, Config, RunDir, preset, summarize, sweep  # noqa: E402
from chaosgd.experiments.measure import measure, sweet_spot  # noqa: E402

__version__ = "0.7.0"

__all__ = ["ChaosgdError", "measure", "sweet_spot", "Config", "preset", "PRESETS", "sweep", "summarize", "RunDir",
           "find_sweet_spot", "run", "initial_conditions", "epsilon_ball", "check_epsilon", "MLP", "CNN",
           "count_parameters", "Objective", "classification", "Records", "local_exponent", "network_exponent",
           "tangent_exponents", "top_eigenvalue", "top_eigenvalues", "track_sharpness", "time_to_accuracy"]
