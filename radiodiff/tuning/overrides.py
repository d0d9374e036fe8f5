"""Change a frozen config along dotted params keys (`ldm.train.optim.lr`), as `dvc exp run -S` does
to params.yaml: each value is checked against its field's type and the dataclass's own checks."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from radiodiff.errors import UserError
from radiodiff.typed_yaml import convert

T = TypeVar("T")


def apply_overrides(config: T, overrides: Mapping[str, Any]) -> T:
    """A copy of the frozen dataclass `config` with each dotted key set to its (YAML-typed) value.

    An unknown key, a wrong type or a value the config rejects is a one-line `UserError`.
    """
    for key, value in overrides.items():
        config = _replace(config, key.split("."), value, key)
    return config


def _replace(node: Any, parts: list[str], value: Any, key: str) -> Any:
    name, rest = parts[0], parts[1:]
    fields = {f.name for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else set()
    if name not in fields:
        where = key[: len(key) - len(".".join(parts))].rstrip(".") or "params"
        known = ", ".join(sorted(fields)) or "none: it is a value, not a section"
        raise UserError(f"unknown params key {key!r}: {where} has no {name!r} (known: {known})")
    if rest:
        new = _replace(getattr(node, name), rest, value, key)
    else:
        new = convert(typing.get_type_hints(type(node))[name], value, key)
    try:
        return dataclasses.replace(node, **{name: new})
    except (ValueError, TypeError) as exc:
        raise UserError(f"{key}={value!r}: {exc}") from None


def lookup(config: Any, key: str) -> Any:
    """The value at dotted `key` of a config dataclass (a `UserError` if there is none)."""
    node = config
    for name in key.split("."):
        if not dataclasses.is_dataclass(node) or name not in {f.name for f in dataclasses.fields(node)}:
            raise UserError(f"unknown params key {key!r}")
        node = getattr(node, name)
    return node
