"""Build frozen dataclasses from parsed YAML, strictly: unknown keys and wrong types are errors.
And back: `plain` turns a config into YAML/JSON-able values.

This is the one place that turns untyped mappings into typed config; everything below it
receives dataclasses. Supported field types: bool, int, float, str, Enum subclasses,
`X | None`, `tuple[X, ...]`, `dict[str, X]` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import reprlib
import types
import typing
from typing import Any, TypeVar

from radiodiff.errors import UserError

T = TypeVar("T")

SHOWN_CHARS = 60  # the most of a user's value an error message quotes
MESSAGE_CHARS = 300  # the most of a check's own message: a one-line error stays readable

_short = reprlib.Repr()
_short.maxlevel, _short.maxlist, _short.maxtuple, _short.maxdict = 2, 4, 4, 4
_short.maxstring = _short.maxother = _short.maxlong = SHOWN_CHARS


def shown(value: Any) -> str:
    """`value` as an error message quotes it: its repr, cut to about SHOWN_CHARS characters, so
    a huge or deeply nested value (a YAML alias bomb, a pasted array) cannot flood the line."""
    text = _short.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def cut(message: str, limit: int = MESSAGE_CHARS) -> str:
    """A message cut to `limit` characters on one line."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[:limit - 3] + "..."


def build(cls: type[T], raw: Any, where: str) -> T:
    """Instantiate dataclass `cls` from mapping `raw`; `where` names the place for errors."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    # YAML keys may be numbers, null or text with line breaks: shown escaped, sorted as text.
    unknown = sorted(repr(str(key))[1:-1] for key in set(raw) - set(fields))
    if unknown:
        raise UserError(cut(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}", 600))
    values = {name: convert(hints[name], raw[name], f"{where}.{name}") for name in fields if name in raw}
    try:
        return cls(**values)
    except (ValueError, TypeError, UserError) as exc:
        raise UserError(f"{where}: {cut(str(exc))}") from None


def convert(hint: Any, value: Any, where: str) -> Any:
    """Check and convert one YAML value to the annotated type `hint`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return convert(inner, value, where)
    if origin is tuple:
        return _convert_tuple(hint, value, where)
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {shown(value)}")
        return {str(k): convert(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _convert_enum(hint, value, where)
    return _convert_scalar(hint, value, where)


def _convert_tuple(hint: Any, value: Any, where: str) -> tuple:
    args = typing.get_args(hint)
    if not isinstance(value, list | tuple):
        raise UserError(f"{where}: expected a YAML list, got {shown(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise UserError(f"{where}: expected {len(args)} items, got {len(value)}")
    return tuple(convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _convert_enum(hint: type[enum.Enum], value: Any, where: str) -> enum.Enum:
    try:
        return hint(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in hint)
        raise UserError(f"{where}: {shown(value)} is not one of: {choices}") from None


def _convert_scalar(hint: Any, value: Any, where: str) -> Any:
    # bool is a subclass of int in Python: refuse `true` where a number is meant and vice versa.
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        # YAML's .nan and .inf mean no setting; an integer past float range would overflow.
        if (isinstance(value, float) and not math.isfinite(value)) or (isinstance(value, int) and abs(value) > 1e300):
            raise UserError(f"{where}: expected a finite number, got {shown(value)}")
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if hint is Any:
        return value
    name = getattr(hint, "__name__", str(hint))
    raise UserError(f"{where}: expected {name}, got {shown(value)} ({type(value).__name__})")


def plain(config: Any) -> Any:
    """A config dataclass as plain JSON-able values (Enums by value), for model files and hashes."""
    if dataclasses.is_dataclass(config):
        return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, enum.Enum):
        return config.value
    if isinstance(config, tuple | list):
        return [plain(v) for v in config]
    if isinstance(config, dict):
        return {k: plain(v) for k, v in config.items()}
    return config
