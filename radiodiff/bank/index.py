"""The in-memory index of one bank key's entries: numpy columns, no latents.

Built from the small columns of each part file only, so 100k entries cost a few MB
(mostly the embeddings, `[N, D]` float32). Each entry points at its latent by part file,
row group and row within the group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from radiodiff.bank.key import BankKey
from radiodiff.bank.parts import read_index_columns
from radiodiff.bank.schema import INDEX_COLUMNS, BankError



def _empty(dtype) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


@dataclass
class KeyIndex:
    """Entries of one key, in write order; the first write of a (scene, cell, seed) wins."""

    files: list[str] = field(default_factory=list)
    scene: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    cell: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    seed: np.ndarray = field(default_factory=lambda: _empty(np.int64))
    part: np.ndarray = field(default_factory=lambda: _empty(np.int32))  # position in `files`
    group: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    row: np.ndarray = field(default_factory=lambda: _empty(np.int32))
    embedding: np.ndarray | None = None  # [N, D] float32; None until the first entry
    quarantined: dict[str, str] = field(default_factory=dict)  # part file name -> why it is skipped

    def __len__(self) -> int:
        return len(self.scene)

    def find(self, scene: int, cell: int, seed: int) -> int | None:
        """Position of entry (scene, cell, seed), or None."""
        hits = np.flatnonzero((self.scene == scene) & (self.cell == cell) & (self.seed == seed))
        return int(hits[0]) if len(hits) else None

    def contains(self, scene: np.ndarray, cell: np.ndarray, seed: np.ndarray) -> np.ndarray:
        """Whether each query triple is already indexed: bool `[Q]`.

        Only entries sharing a query's scene id are compared, so a put of a few hundred
        midpoints into a bank of 100k costs one `isin` pass, not Q full scans.
        """
        near = np.flatnonzero(np.isin(self.scene, scene))
        known = set(zip(self.scene[near].tolist(), self.cell[near].tolist(), self.seed[near].tolist()))
        return np.array([key in known for key in zip(scene.tolist(), cell.tolist(), seed.tolist())], dtype=bool)

    def add_part(self, root: Path, name: str, key: BankKey) -> None:
        """Append the entries of part file `root/name` that belong to `key`."""
        path = root / name
        try:
            table, groups, rows = read_index_columns(path, INDEX_COLUMNS)
        except BankError as exc:
            self.files.append(name)
            self.quarantined[name] = str(exc)
            return
        mine = pc.and_(
            pc.and_(pc.equal(table["model_hash"], key.model_hash), pc.equal(table["sampler_hash"], key.sampler_hash)),
            pc.equal(table["t_mid"], key.t_mid),
        ).to_numpy(zero_copy_only=False)
        self.files.append(name)
        if not mine.any():
            return
        table = table.filter(mine)
        scene = table["scene_id"].to_numpy().astype(np.int64)
        cell = table["cell"].to_numpy().astype(np.int32)
        seed = table["seed"].to_numpy().astype(np.int64)
        try:
            embedding = _embedding_matrix(table["embedding"], path)
            self._check_dim(embedding, path)
        except BankError as exc:
            self.quarantined[name] = str(exc)
            return
        keep = _first_occurrence(scene, cell, seed) & ~self.contains(scene, cell, seed)
        self._append(scene[keep], cell[keep], seed[keep], groups[mine][keep], rows[mine][keep], embedding[keep])

    def quarantine(self, part: int, reason: str) -> None:
        """Skip part `part` (its position in `files`) from now on: its entries leave the index.
        An entry it hid behind (a later copy of the same key) is not restored here; the
        next full refresh, which re-indexes every part, finds it."""
        self.quarantined[self.files[part]] = reason
        keep = self.part != part
        for name in ("scene", "cell", "seed", "part", "group", "row"):
            setattr(self, name, getattr(self, name)[keep])
        if self.embedding is not None:
            self.embedding = self.embedding[keep]

    def _check_dim(self, embedding: np.ndarray, path: Path) -> None:
        if self.embedding is not None and embedding.shape[1] != self.embedding.shape[1]:
            raise BankError(
                f"{path}: embeddings have {embedding.shape[1]} values, other entries of this key have "
                f"{self.embedding.shape[1]}"
            )

    def _append(self, scene, cell, seed, group, row, embedding) -> None:
        part = np.full(len(scene), len(self.files) - 1, dtype=np.int32)
        self.scene = np.concatenate([self.scene, scene])
        self.cell = np.concatenate([self.cell, cell])
        self.seed = np.concatenate([self.seed, seed])
        self.part = np.concatenate([self.part, part])
        self.group = np.concatenate([self.group, group])
        self.row = np.concatenate([self.row, row])
        self.embedding = embedding if self.embedding is None else np.concatenate([self.embedding, embedding])


def _first_occurrence(scene: np.ndarray, cell: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Bool mask keeping the first row of each (scene, cell, seed) triple."""
    triples = np.stack([scene, cell.astype(np.int64), seed], axis=1)
    _, first = np.unique(triples, axis=0, return_index=True)
    keep = np.zeros(len(scene), dtype=bool)
    keep[first] = True
    return keep


def _embedding_matrix(column, path: Path) -> np.ndarray:
    """A list<float32> column of equal-length lists as `[N, D]` float32."""
    lists = column.combine_chunks()
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != lengths.max() or lengths[0] == 0):
        raise BankError(f"{path}: embeddings are empty or of different lengths within one key")
    values = lists.flatten()
    if values.null_count:
        raise BankError(f"{path}: an embedding has missing values")
    dim = int(lengths[0]) if len(lengths) else 0
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(lengths), dim)
