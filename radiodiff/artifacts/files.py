"""The model file format: weights plus the plain config that rebuilds them, written atomically
and read with `weights_only` (a model file cannot run code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from radiodiff.errors import UserError
from radiodiff.io import atomic_path, file_sha256
from radiodiff.typed_yaml import plain

MODEL_FORMAT = 1
Device = torch.device | str  # where a loader puts the network: "cpu", "cuda:0", ...


def file_digest(path: Path) -> str:
    """SHA-256 of a file (for keying resume folders and banks on the exact inputs)."""
    return file_sha256(path)


def save_model(path: Path, *, kind: str, state_dict: dict, config: Any, extra: dict | None = None) -> None:
    """Write a final model file atomically: weights plus the plain config that rebuilds it."""
    payload = {"format": MODEL_FORMAT, "kind": kind, "state_dict": state_dict, "config": plain(config),
               "extra": dict(extra or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model_file(path: Path, kind: str) -> dict:
    """Read a model file written by `save_model` onto the CPU (weights_only: it cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which, not an unpickling trace
        raise UserError(f"{path}: not a readable radiodiff model file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("kind") != kind or payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path}: not a radiodiff {kind} model file")
    return payload
