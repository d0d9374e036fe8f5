"""What the training stages share: resume folders keyed by their inputs, batched evaluation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from radiodiff.artifacts.files import file_digest
from radiodiff.devices import to_device
from radiodiff.data.assemble import INDEX_FILE
from radiodiff.errors import UserError
from radiodiff.io import safe_child
from radiodiff.typed_yaml import plain


# Config keys that say where and how fast a run computes, not what: a run moved to another
# device (a GPU job resumed on the CPU, or on another GPU) resumes from the same folder.
PLACEMENT_KEYS = frozenset({"device", "compile"})


def run_folder(root: Path, stage: str, *parts: Any) -> Path:
    """A resume folder for `stage`, keyed by a hash of `parts` (configs, input digests) less
    their placement keys: a restart with the same inputs resumes there, on any device;
    changed inputs never resume stale state."""
    key = [_without_placement(plain(p)) for p in parts]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
    return safe_child(root, stage) / digest.hexdigest()[:16]


def _without_placement(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_placement(v) for k, v in value.items() if k not in PLACEMENT_KEYS}
    if isinstance(value, list):
        return [_without_placement(v) for v in value]
    return value


def dataset_digest(dataset_dir: Path) -> str:
    """Digest of a prepared dataset: every file of it, so new targets behind an unchanged index
    (say, after a simulator change) never resume a checkpoint trained on the old ones."""
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / INDEX_FILE).is_file():
        raise UserError(f"no dataset at {dataset_dir}: run the prepare stage first")
    sha = hashlib.sha256()
    for path in sorted(p for p in dataset_dir.iterdir() if p.is_file()):
        sha.update(path.name.encode() + b"\0" + file_digest(path).encode())
    return sha.hexdigest()


def batched(dataset: torch.utils.data.Dataset, batch_size: int, limit: int | None = None,
            device: torch.device | None = None) -> Iterator[dict]:
    """Deterministic, in-order batches of a dataset (for validation and test), their tensors on
    `device` (None: where the dataset made them, the CPU)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    pin = device is not None and device.type == "cuda"
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=batch_size,
                                         pin_memory=pin)
    for batch in loader:
        yield batch if device is None else to_device(batch, device)


def predict_all(predict: Callable[[dict], torch.Tensor], dataset, batch_size: int, limit: int | None = None,
                device: torch.device | None = None):
    """Run `predict(batch) -> gain [B,1,H,W]` over a dataset, each batch on `device`:
    (pred, target, map ids), pred and target `[N, 1, H, W]` float32 on the CPU."""
    preds, targets, maps = [], [], []
    with torch.no_grad():
        for batch in batched(dataset, batch_size, limit, device):
            preds.append(predict(batch).float().cpu())
            targets.append(batch["gain"].cpu())
            maps += batch["map_id"].tolist()
    return torch.cat(preds), torch.cat(targets), maps
