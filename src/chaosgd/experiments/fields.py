"""Values of configuration fields, checked and parsed by the field's declared type.

``typed`` checks a value given from Python or TOML (``bool``, ``int``, ``float``, ``str``, tuples of those, and
``X | None``); ``from_text`` parses what a user typed on the command line. Both say, on failure, the field, what was
given and what is allowed, so that no value is ever read as something else: ``"False"`` is false for a boolean,
``2.5`` is no count, NaN is no number.
"""

from __future__ import annotations

import math
import tomllib
import types
import typing

import numpy as np

from chaosgd.errors import ChaosgdError


class ConfigError(ChaosgdError, ValueError):
    """A configuration value that is not allowed; the message names the field."""


def require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{where}: {message}")


def _optional(hint):
    """(inner type, True) for ``X | None``; (hint, False) otherwise."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _describe(hint) -> str:
    inner, optional = _optional(hint)
    if typing.get_origin(inner) is tuple:
        text = "a list of " + {int: "integers", float: "finite numbers"}[typing.get_args(inner)[0]]
    else:
        text = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}[inner]
    return text + (" (or none)" if optional else "")


def typed(value, hint, where: str):
    """``value`` as the declared type ``hint``, or a ConfigError saying what was given and what is allowed."""
    inner, optional = _optional(hint)
    if value is None:
        require(optional, where, f"must be {_describe(hint)}; got nothing")
        return None
    given = f"got {value!r} ({type(value).__name__})"
    if typing.get_origin(inner) is tuple:
        require(isinstance(value, (list, tuple)), where, f"must be {_describe(hint)}; {given}")
        item = typing.get_args(inner)[0]
        return tuple(typed(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if inner is bool:
        require(isinstance(value, (bool, np.bool_)), where, f"must be true or false; {given}")
        return bool(value)
    if inner is int:
        integral = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            integral, value = True, int(value)  # 50.0 is the count 50; 2.5 is no count
        require(integral, where, f"must be an integer; {given}")
        return int(value)
    if inner is float:
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        require(number, where, f"must be a number; {given}")
        try:
            value = float(value)
        except OverflowError:  # an integer too large for a float
            raise ConfigError(f"{where}: must be a finite number; got an integer of {len(str(value))} digits") from None
        require(math.isfinite(value), where, f"must be a finite number; got {value!r}")
        return float(value)
    require(isinstance(value, str), where, f"must be a string; {given}")
    return value


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def from_text(text: str, hint, where: str):
    inner, optional = _optional(hint)
    if optional and text.lower() in ("none", "null", ""):
        return None
    if typing.get_origin(inner) is tuple:
        body = text
        if text.startswith("[") or text.endswith("]"):
            require(text.startswith("[") and text.endswith("]"), where,
                     f"malformed list {text!r}; write it as [1, 10] or 1,10")
            body = text[1:-1]
        items = [t.strip() for t in body.split(",")]
        if items == [""]:
            return ()
        require(all(items), where, f"malformed list {text!r} (an empty item); write it as [1, 10] or 1,10")
        return tuple(from_text(t, typing.get_args(inner)[0], f"{where}[{i}]") for i, t in enumerate(items))
    if inner is bool:
        lowered = text.lower()
        require(lowered in _TRUE | _FALSE, where, f"must be true or false (also yes/no, on/off, 1/0); got {text!r}")
        return lowered in _TRUE
    if inner in (int, float):
        try:
            number = tomllib.loads(f"v = {text}")["v"]  # TOML numbers: 1e-8, 10_000, nan, inf
        except tomllib.TOMLDecodeError:
            try:
                number = float(text)  # Python spellings TOML lacks: 1., .5, 1E3
            except ValueError:
                raise ConfigError(f"{where}: must be {_describe(inner)}; got {text!r}") from None
        require(isinstance(number, (int, float)) and not isinstance(number, bool), where,
                 f"must be {_describe(inner)}; got {text!r}")
        return typed(number, inner, where)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text
