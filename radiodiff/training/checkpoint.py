"""Training checkpoints: atomic save, safe (weights_only) load, latest lookup, pruning.

A checkpoint file is a `torch.save` of plain containers, tensors and numbers only:
{"format", "version", "step", "model", "ema", "optimizer", "rng", "extra", "loop_state"}. Loading uses
`torch.load(weights_only=True)`, which never runs code from the file.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from radiodiff.errors import UserError
from radiodiff.io import atomic_path
from radiodiff.training.ema import EMA

FORMAT = "radiodiff-checkpoint"
VERSION = 1
_KEYS = {"step", "model", "ema", "optimizer", "rng", "extra", "loop_state"}
_NAME = re.compile(r"^step_(\d+)\.pt$")
_TEMP_NAME = re.compile(r"^\.step_\d+\.pt\..+\.tmp$")  # what `atomic_path` writes before the rename
# Exact types: subclasses such as numpy.float64 or namedtuples would pickle as classes
# that a weights_only load refuses.
_PLAIN_SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Checkpoint:
    """What `load_checkpoint` hands back besides the states it loaded into the objects."""

    path: Path
    step: int
    rng: dict | None
    extra: dict[str, Any] = field(default_factory=dict)
    loop_state: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """The file name used for `step` in `directory`: `step_00001000.pt`."""
    return Path(directory) / f"step_{step:08d}.pt"


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    rng: dict | None,
    extra: Mapping[str, Any] | None = None,
    loop_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (a crash never leaves a half-written file at `path`).

    `rng` is `capture_rng_state()` (or None); `extra` holds plain values only (numbers,
    strings, bools, None, tensors, and lists/tuples/dicts of them), e.g. the VAE latent
    scale factor; anything else raises TypeError here rather than failing at load time.
    `loop_state` is the training loop's own bookkeeping (batch position, last metrics).
    """
    extra, loop_state = dict(extra or {}), dict(loop_state or {})
    _check_plain(extra, "extra")
    _check_plain(loop_state, "loop_state")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "model": model.state_dict(),
        "ema": None if ema is None else ema.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "rng": rng,
        "extra": extra,
        "loop_state": loop_state,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    ema: EMA | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Checkpoint:
    """Load the states in `path` into the given objects (each optional) and return the rest.

    Raises UserError naming the file when it is missing, truncated, corrupt, not a
    radiodiff checkpoint, or does not fit the given model.
    """
    path = Path(path)
    payload = read_payload(path)
    try:
        if model is not None:
            model.load_state_dict(payload["model"])
        if ema is not None and payload["ema"] is not None:
            ema.load_state_dict(payload["ema"])
        if optimizer is not None and payload["optimizer"] is not None:
            optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"checkpoint {path} does not match the model or optimizer: {_first_line(exc)}") from exc
    return Checkpoint(
        path=path,
        step=payload["step"],
        rng=payload["rng"],
        extra=payload["extra"],
        loop_state=payload["loop_state"],
    )


def read_payload(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict of `path`, loaded on CPU with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"checkpoint {path} is corrupt or truncated: {_first_line(exc)}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a radiodiff checkpoint")
    if payload.get("version") != VERSION:
        raise UserError(f"checkpoint {path} has version {payload.get('version')}, expected {VERSION}")
    missing = sorted(_KEYS - payload.keys())
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}")
    return payload


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in `directory`, or None if there is none."""
    found = _checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: str | os.PathLike, *, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints in `directory`, and the temporary files of
    writes that a killed process never finished; return the deleted paths.

    Call it only from the one process that writes checkpoints to `directory`, after a save:
    any temporary file then left is a dead write's (one per kill, each as large as a checkpoint).
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    doomed = [path for _, path in _checkpoints(directory)[:-keep]]
    if Path(directory).is_dir():
        doomed += [path for path in Path(directory).iterdir() if _TEMP_NAME.match(path.name)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def _checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def _check_plain(value: Any, where: str) -> None:
    if type(value) is dict:
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif type(value) not in _PLAIN_SCALARS and not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints hold plain values only")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
