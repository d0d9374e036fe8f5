"""The best trial's params as files: `best_params.yaml` (readable, and `read_best` takes it back)
and `best_params.args`, one `-S ++key=value` per line (Hydra's "set or add": a profile may leave
the key to its dataclass default), so that

    dvc exp run $(cat tune/best_params.args)

runs the pipeline with them. Both are written atomically."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from radiodiff.errors import UserError
from radiodiff.io import atomic_write_text
from radiodiff.profiles import hydra_value

BEST_YAML = "best_params.yaml"
BEST_ARGS = "best_params.args"
# `$(cat FILE)` splits words on whitespace, so each value is written as one shell word in
# Hydra's override syntax (`radiodiff.profiles.hydra_value`), which DVC parses as params.yaml's.


def write_best(directory: Path, *, study: str, storage: str, metric: str, trial: int, value: float,
               params: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write both files into `directory`; returns (yaml path, args path)."""
    record = {"study": study, "storage": str(storage), "trial": trial, "metric": metric, "value": float(value),
              "params": dict(params)}
    header = f"# Best trial of Optuna study {study!r}; apply with: dvc exp run $(cat {directory / BEST_ARGS})\n"
    yaml_path, args_path = Path(directory) / BEST_YAML, Path(directory) / BEST_ARGS
    args = set_param_args(params)  # before either file is written: a value it refuses leaves both as they were
    atomic_write_text(yaml_path, header + yaml.safe_dump(record, sort_keys=False))
    atomic_write_text(args_path, args)
    return yaml_path, args_path


def set_param_args(params: Mapping[str, Any]) -> str:
    """`-S ++key=value` lines for `dvc exp run` (a UserError for a value that is not one plain word)."""
    return "".join(f"-S ++{key}={_arg_value(key, value)}\n" for key, value in params.items())


def _arg_value(key: str, value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}: {value} cannot be written to params.yaml")
    return hydra_value(value, key)  # the same spelling as the profiles' overrides


def read_best(path: Path) -> dict[str, Any]:
    """The params mapping (dotted key -> value) of a `best_params.yaml`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"best params file not found: {path}")
    record = yaml.safe_load(path.read_text())
    if not isinstance(record, dict) or not isinstance(record.get("params"), dict):
        raise UserError(f"{path}: not a best-params file (no `params` mapping)")
    return dict(record["params"])
