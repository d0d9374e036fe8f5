"""Profiles as DVC's own parameter overrides.

A profile (`profiles/NAME.yaml`) is a whole params file: the study (the full comparison on a
CPU) or the paper's scale (GPU workers). It is not copied over `params.yaml`, a tracked file:
`profile_overrides` turns the difference between the two into `dvc exp run -S` arguments in
Hydra's override syntax, so the profile runs as a DVC experiment and `params.yaml` stays the
default (the demo) in the work tree:

    dvc exp run $(.venv/bin/radiodiff profile study)

Each argument is one shell word (no spaces, no quotes), so the command substitution above
passes it to DVC unchanged. Values are read as YAML 1.2, as DVC reads params files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from radiodiff.errors import UserError

PROFILES_DIR = Path("profiles")
DEFAULT = "default"  # params.yaml itself
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_WORD = re.compile(r"[A-Za-z0-9_.+\-/:]+")


def available(root: Path = Path(".")) -> list[str]:
    """The profile names: `default` and every `profiles/*.yaml`."""
    return [DEFAULT] + sorted(p.stem for p in (root / PROFILES_DIR).glob("*.yaml"))


def profile_path(name: str, root: Path = Path(".")) -> Path | None:
    """The file of profile `name` under `root` (None for `default`: params.yaml as it is); an
    unknown name is a UserError listing the known ones."""
    if name == DEFAULT:
        return None
    path = root / PROFILES_DIR / f"{name}.yaml"
    if not _NAME.fullmatch(name) or not path.is_file():
        raise UserError(f"unknown profile {name!r}; known: {', '.join(available(root))}")
    return path


def profile_overrides(current: dict, target: dict, prefix: str = "") -> list[str]:
    """DVC `-S` values (Hydra override syntax) turning params `current` into `target`:
    `++key=value` for every added or changed leaf, `~key` for every key `target` lacks."""
    sets: list[str] = []
    for key, value in target.items():
        path = f"{prefix}{key}"
        old = current.get(key)
        if isinstance(value, dict) and value and isinstance(old, dict):
            sets += profile_overrides(old, value, f"{path}.")
        elif key not in current or old != value:
            sets.append(f"++{path}={hydra_value(value, path)}")
    for key in (key for key in current if key not in target):
        # Hydra refuses to delete a null value ("does not exist"): give it one first.
        sets += [f"++{prefix}{key}=0"] if current[key] is None else []
        sets.append(f"~{prefix}{key}")
    return sets


def hydra_value(value: Any, where: str = "value") -> str:
    """A YAML value in Hydra override syntax, as one shell word: JSON scalars, `[a,b]` lists and
    `{k:v}` mappings without spaces. A string that is not one plain word is a UserError."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item, f'{where}.{key}')}" for key, item in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item, where) for item in value) + "]"
    if isinstance(value, str):
        if not _WORD.fullmatch(value):
            raise UserError(f"{where}: {value!r} is not one plain word, so it cannot pass as a `-S` override; "
                            "set it in params.yaml by hand")
        # Quotes reach DVC as they are (a command substitution keeps them): Hydra then reads
        # a string that looks like a number, bool or null as the string it is.
        return f"'{value}'" if _looks_typed(value) else value
    return json.dumps(value)


def _looks_typed(text: str) -> bool:
    if text.lower() in ("true", "false", "null", "none", "nan", "inf", "-inf"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def profile_sets(name: str, root: Path = Path("."), params_file: str = "params.yaml") -> list[str]:
    """The overrides turning `root/params_file` into profile `name` (none for `default`), both
    read as DVC reads them (YAML 1.2)."""
    path = profile_path(name, root)
    if path is None:
        return []
    from dvc.utils.serialize import load_yaml  # YAML 1.2: PyYAML would read 1e-06 as text

    params = root / params_file
    if not params.is_file():
        raise UserError(f"params file not found: {params}")
    return profile_overrides(load_yaml(params), load_yaml(path))


def dvc_set_args(name: str, root: Path = Path("."), params_file: str = "params.yaml") -> list[str]:
    """`profile_sets` as `dvc exp run` arguments: `-S`, value, `-S`, value, ..."""
    return [arg for item in profile_sets(name, root, params_file) for arg in ("-S", item)]
