"""A user's model named in configuration: ``model.source = "package.module:function"``.

The function is a factory that returns the model (anything with ``init(key)`` and ``apply(params, x)``, or a torch
``nn.Module``, converted by ``from_torch``). It is imported by name in every process that trains, so sweeps, the
sweet-spot search and reports work for it from the command line and on Dask workers alike; the folder the command
runs in is importable, as for ``python -m``. The module file's SHA-256 pins the code a run was made with.

Naming a module runs its code: a configuration file with ``model.source`` is code, to be run only when trusted.
Functions of the standard library (``os:abort``) and of chaosgd itself are refused: they are never model factories.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import sys
import traceback

from chaosgd.errors import ChaosgdError

SOURCE_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


class SourceError(ChaosgdError, ValueError):
    """A ``model.source`` that cannot be imported or does not give a model; the message says which and why."""


def factory(source: str):
    """The function ``source`` ("package.module:function") names."""
    if not SOURCE_PATTERN.fullmatch(source):
        raise SourceError(f"model.source must look like 'package.module:function'; got {source!r}")
    module_name, function = source.split(":")
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "chaosgd":  # (os:abort would end the process without a word)
        where = "Python's standard library" if top != "chaosgd" else "chaosgd itself"
        raise SourceError(f"model.source: {module_name} is a module of {where}, not a model factory; name a "
                          "function of your own module, e.g. mymodels:make")
    module = _import(module_name)
    made = getattr(module, function, None)
    if not callable(made):
        raise SourceError(f"model.source: module {module_name} ({module.__file__}) has no function {function!r}")
    return made


def model_from_source(source: str, examples, n_classes: int, dtype: str = "float64"):
    """The model ``source``'s factory returns for a data set whose first training ``examples`` are given; it gets
    ``example_shape`` and ``n_classes`` as keyword arguments if its signature names them. A torch module is
    translated (``from_torch``, in ``dtype``) and checked on those examples."""
    make = factory(source)
    wanted = inspect.signature(make).parameters
    given = {"example_shape": tuple(examples.shape[1:]), "n_classes": int(n_classes)}
    try:
        model = make(**{k: v for k, v in given.items() if k in wanted})
    except Exception as error:
        raise SourceError(f"model.source: {source}(...) raised {type(error).__name__}: {error}") from error
    if _is_torch_module(model):
        from chaosgd.models.pytorch import from_torch_for_data
        return from_torch_for_data(model, examples, dtype=dtype)
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
    return _file_sha256(path)


_IMPORTED: dict[str, str] = {}  # module name -> SHA-256 of its file when this process imported it


def _import(module_name: str):
    """The module, imported again if its file changed since this process imported it (so that the code that runs
    is the code whose digest a run pins, in a notebook too)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does, also for the installed `chaosgd` command and workers
    imported_elsewhere = module_name in sys.modules and module_name not in _IMPORTED
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        parts = module_name.split(".")
        if error.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
            raise SourceError(f"model.source: no module named {module_name!r} (looked in the current folder "
                              f"{os.getcwd()} and on sys.path)") from None
        raise SourceError(_failed_import(module_name, error)) from error  # it imports something missing
    except Exception as error:  # its code fails when imported: say where, as its traceback would
        raise SourceError(_failed_import(module_name, error)) from error
    path = getattr(module, "__file__", None)
    if path is not None:
        now = _file_sha256(path)
        # Its code may be older than its file: imported again. Not an installed package's (numpy's), which
        # others hold and which is not edited in place.
        if (imported_elsewhere and not _installed(path)) or _IMPORTED.get(module_name, now) != now:
            module = importlib.reload(module)
        _IMPORTED[module_name] = now
    return module


def _installed(path) -> bool:
    """Whether a module's file belongs to an installed package (site-packages), not to the user's folders."""
    return any(part in ("site-packages", "dist-packages") for part in os.path.normpath(path).split(os.sep))


def _failed_import(module_name: str, error: BaseException) -> str:
    """What went wrong importing a user's module, and where (the file and line of the failure)."""
    if isinstance(error, SyntaxError) and error.filename:
        where = f"{error.filename}:{error.lineno}"
    else:
        frames = traceback.extract_tb(error.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return (f"model.source: importing {module_name} failed at {where}: {type(error).__name__}: "
            f"{getattr(error, 'msg', None) if isinstance(error, SyntaxError) else error}")


def _file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _is_torch_module(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)
