"""What the training stages share: resume folders keyed by their inputs, batched evaluation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from radiodiff.artifacts.files import file_digest
from radiodiff.data.assemble import INDEX_FILE
from radiodiff.errors import UserError
from radiodiff.io import safe_child
from radiodiff.typed_yaml import plain


def run_folder(root: Path, stage: str, *parts: Any) -> Path:
    """A resume folder for `stage`, keyed by a hash of `parts` (configs, input digests): a
    restart with the same inputs resumes there; changed inputs never resume stale state."""
    digest = hashlib.sha256(json.dumps([plain(p) for p in parts], sort_keys=True, default=str).encode())
    return safe_child(root, stage) / digest.hexdigest()[:16]


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


def batched(dataset: torch.utils.data.Dataset, batch_size: int, limit: int | None = None) -> Iterator[dict]:
    """Deterministic, in-order batches of a dataset (for validation and test)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(count)), batch_size=batch_size)
    yield from loader


def predict_all(predict: Callable[[dict], torch.Tensor], dataset, batch_size: int, limit: int | None = None):
    """Run `predict(batch) -> gain [B,1,H,W]` over a dataset: (pred, target, map ids, buildings)."""
    preds, targets, maps = [], [], []
    with torch.no_grad():
        for batch in batched(dataset, batch_size, limit):
            preds.append(predict(batch).float().cpu())
            targets.append(batch["gain"])
            maps += batch["map_id"].tolist()
    return torch.cat(preds), torch.cat(targets), maps
