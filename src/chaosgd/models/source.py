"""A user's model named in configuration: ``model.source = "package.module:function"``.

The function is a factory that returns the model (anything with ``init(key)`` and ``apply(params, x)``, or a torch
``nn.Module``, converted by ``from_torch``). It is imported by name in every process that trains, so sweeps, the
sweet-spot search and reports work for it from the command line and on Dask workers alike; the folder the command
runs in is importable, as for ``python -m``. The module file's SHA-256 pins the code a run was made with.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import sys

SOURCE_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
FACTORY_ARGUMENTS = ("example_shape", "n_classes")  # passed to a factory that names them


class SourceError(ValueError):
    """A ``model.source`` that cannot be imported or does not give a model; the message says which and why."""


def factory(source: str):
    """The function ``source`` ("package.module:function") names."""
    if not SOURCE_PATTERN.fullmatch(source):
        raise SourceError(f"model.source must look like 'package.module:function'; got {source!r}")
    module_name, function = source.split(":")
    module = _import(module_name)
    made = getattr(module, function, None)
    if not callable(made):
        raise SourceError(f"model.source: module {module_name} ({module.__file__}) has no function {function!r}")
    return made


def build(source: str, example_shape: tuple[int, ...], n_classes: int):
    """The model ``source``'s factory returns for a data set; it gets ``example_shape`` and ``n_classes`` as keyword
    arguments if its signature names them. A torch module is converted (``from_torch``) with a zero example."""
    make = factory(source)
    wanted = inspect.signature(make).parameters
    given = {"example_shape": tuple(example_shape), "n_classes": int(n_classes)}
    model = make(**{k: v for k, v in given.items() if k in wanted})
    if _is_torch_module(model):
        from chaosgd.models.pytorch import from_torch, torch_example
        return from_torch(model, torch_example(example_shape))
    if not (callable(getattr(model, "init", None)) and callable(getattr(model, "apply", None))):
        raise SourceError(f"model.source: {source} returned {type(model).__name__}, not a model: it must have "
                          "init(key) and apply(params, x) (e.g. chaosgd.models.FunctionModel) or be a torch "
                          "nn.Module")
    return model


def digest(source: str) -> str:
    """SHA-256 of the file of the module ``source`` names (what a run pins as ``model.source_sha256``)."""
    factory(source)  # the function exists
    module = sys.modules[source.split(":")[0]]
    path = getattr(module, "__file__", None)
    if path is None:
        raise SourceError(f"model.source: module {module.__name__} has no file whose content could pin the run")
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _import(module_name: str):
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` does, also for the installed `chaosgd` command and workers
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise SourceError(f"model.source: no module named {module_name!r} (looked in the current folder "
                              f"{os.getcwd()} and on sys.path)") from None
        raise  # the module exists but imports something missing: its own traceback says what


def _is_torch_module(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)
