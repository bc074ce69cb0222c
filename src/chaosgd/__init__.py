"""chaosgd: chaos in the training of neural networks, by full-batch gradient descent (the paper's) and beyond.

Importing chaosgd changes no JAX setting: chaosgd computes in float64 inside its own calls (``chaosgd.precision``).
"""

__version__ = "0.10.0"

# The public API, imported when first used: ``import chaosgd`` stays quick (the command line's --help, each worker
# process), and what a script never uses (scipy, the experiment layer) is never loaded.
_EXPORTS = {
    "chaosgd.errors": ("ChaosgdError",),
    "chaosgd.experiments.measure": ("measure", "sweet_spot"),
    "chaosgd.experiments": ("Config", "preset", "PRESETS", "sweep", "summarize", "RunDir"),
    "chaosgd.sweetspot": ("find_sweet_spot",),
    "chaosgd.engine": ("run",),
    "chaosgd.ensemble": ("initial_conditions", "epsilon_ball", "check_epsilon"),
    "chaosgd.models": ("MLP", "CNN", "count_parameters"),
    "chaosgd.objective": ("Objective", "classification"),
    "chaosgd.records": ("Records",),
    "chaosgd.lyapunov": ("local_exponent", "network_exponent"),
    "chaosgd.tangent": ("tangent_exponents",),
    "chaosgd.sharpness": ("top_eigenvalue", "top_eigenvalues", "track_sharpness"),
    "chaosgd.training_time": ("time_to_accuracy",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["ChaosgdError", "measure", "sweet_spot", "Config", "preset", "PRESETS", "sweep", "summarize", "RunDir",
           "find_sweet_spot", "run", "initial_conditions", "epsilon_ball", "check_epsilon", "MLP", "CNN",
           "count_parameters", "Objective", "classification", "Records", "local_exponent", "network_exponent",
           "tangent_exponents", "top_eigenvalue", "top_eigenvalues", "track_sharpness", "time_to_accuracy"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'chaosgd' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # (found directly from now on)
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
