"""The midpoint bank: cached diffusion latents at `t_mid`, one per (scene, cell, seed) and key.

RadioDiff-Flux denoises each city layout once, under the static condition, down to the
midpoint time `t_mid`, and reuses that latent for every transmitter placed later. A latent
is only valid for the model, sampler and `t_mid` that made it: that triple is the
`BankKey`, and a bank object only ever sees entries of its own key, even when several keys
share one directory.

    bank = MidpointBank("bank/", BankKey(model_hash=m, sampler_hash=s, t_mid=600))
    latent, hit = bank.get_or_compute(scene_id, layout_embedding(buildings), compute)

Writes are append-only part files (see `parts.py`), published under the bank's writer lock
and listed in its record (see `record.py`, and `commit.py` for what a killed writer leaves);
reads go through a numpy index of the small columns (see `index.py`) and load one row group
per latent, checksum verified. A part that fails any check is quarantined: named in
`quarantined`, its entries skipped (a lookup misses), the rest of the bank still served.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from radiodiff.bank.index import KeyIndex
from radiodiff.bank.key import BankKey
from radiodiff.bank.commit import current_record, publish_part
from radiodiff.bank.parts import iter_row_groups, list_parts, read_row
from radiodiff.bank.record import read_record, write_record, writer_lock
from radiodiff.bank.schema import LATENT_COLUMNS, BankError, decode_latent, encode_table

__all__ = ["BankError", "BankKey", "Midpoint", "MidpointBank", "is_sealed", "set_sealed"]


@dataclass(frozen=True)
class Midpoint:
    """One cached latent: `latent` (e.g. `[C, h, w]`) of `scene_id` with its static-layout
    `embedding` `[D]`; `cell` -1 is the scene's static midpoint, >= 0 a coarse Tx cell."""

    scene_id: int
    latent: np.ndarray
    embedding: np.ndarray
    cell: int = -1
    seed: int = 0


class MidpointBank:
    """Midpoint latents of one `BankKey`, stored under directory `root`.

    Append-only and safe to share, across processes too: two bank objects on one directory
    see each other's puts (the index is refreshed when new part files appear), and a put
    that repeats existing (scene, cell, seed) entries adds nothing, checked under the writer
    lock, so neither a restarted build nor two concurrent writers store a key twice.
    """

    def __init__(self, root: Path | str, key: BankKey) -> None:
        self.root = Path(root)
        self.key = key
        self._index = KeyIndex()

    @property
    def quarantined(self) -> dict[str, str]:
        """Part files skipped because they failed a check: file name -> the reason."""
        return dict(self._index.quarantined)

    def put(self, midpoints: Sequence[Midpoint]) -> int:
        """Store the midpoints not yet in the bank as one new part file; returns how many
        were written. Within one call the first of a repeated (scene, cell, seed) wins.
        A sealed bank (see `set_sealed`) refuses puts with a BankError."""
        self._refresh()
        if not self._new_midpoints(midpoints):  # the common warm case takes no lock
            return 0
        with writer_lock(self.root):
            record = current_record(self.root)
            if record.sealed:
                raise BankError(f"{self.root}: the bank is sealed (built by build_bank, a pipeline output); "
                                "store new midpoints in a serving bank beside it")
            self._refresh()  # another writer may have stored some of them meanwhile
            fresh = self._new_midpoints(midpoints)
            if not fresh:
                return 0
            table = encode_table(
                fresh,
                model_hash=self.key.model_hash,
                sampler_hash=self.key.sampler_hash,
                t_mid=self.key.t_mid,
                created=datetime.now(UTC),
            )
            publish_part(self.root, record, table)
        self._refresh()
        return len(fresh)

    def get(self, scene_id: int, *, cell: int = -1, seed: int = 0) -> np.ndarray | None:
        """The latent of (scene_id, cell, seed) under this key, or None."""
        self._refresh()
        position = self._index.find(scene_id, cell, seed)
        return None if position is None else self._load(position)  # None too if its part is damaged

    def has(self, scene_id: int, *, cell: int = -1, seed: int = 0) -> bool:
        """Whether (scene_id, cell, seed) is stored under this key (reads no latent)."""
        self._refresh()
        return self._index.find(scene_id, cell, seed) is not None

    def nearest(
        self, embedding: np.ndarray, max_distance: float, *, cell: int = -1, seed: int = 0,
        exclude: Collection[int] = (),
    ) -> tuple[int, float, np.ndarray] | None:
        """The entry whose embedding is closest to `embedding` `[D]`, as (scene_id, distance,
        latent); None if none lies within `max_distance`.

        Distance is the root-mean-square difference, ||a - b|| / sqrt(D), so a bound means
        the same for any embedding size; only entries with this `cell` and `seed` compete,
        and none of the scenes in `exclude` (e.g. the query's own, to serve an unseen layout).
        """
        self._refresh()
        query = self._check_embedding(embedding)
        while True:  # a best entry in a damaged part is quarantined, and the next best competes
            index = self._index
            allowed = (index.cell == cell) & (index.seed == seed)
            if len(exclude):
                allowed &= ~np.isin(index.scene, np.fromiter(exclude, dtype=np.int64))
            candidates = np.flatnonzero(allowed)
            if len(candidates) == 0:
                return None
            diff = index.embedding[candidates] - query
            distances = np.sqrt(np.einsum("nd,nd->n", diff, diff, dtype=np.float64) / query.size)
            best = int(np.argmin(distances))
            if not distances[best] <= max_distance:
                return None
            position = int(candidates[best])
            scene = int(index.scene[position])
            latent = self._load(position)
            if latent is not None:
                return scene, float(distances[best]), latent

    def get_or_compute(
        self,
        scene_id: int,
        embedding: np.ndarray,
        compute: Callable[[], np.ndarray],
        *,
        cell: int = -1,
        seed: int = 0,
    ) -> tuple[np.ndarray, bool]:
        """The stored latent and True on a hit; on a miss, `compute()`, store and return
        its result with False."""
        latent = self.get(scene_id, cell=cell, seed=seed)
        if latent is not None:
            return latent, True
        latent = np.asarray(compute())
        self.put([Midpoint(scene_id=scene_id, latent=latent, embedding=embedding, cell=cell, seed=seed)])
        return latent, False

    def __len__(self) -> int:
        """Number of entries under this key."""
        self._refresh()
        return len(self._index)

    def __iter__(self) -> Iterator[Midpoint]:
        """Entries under this key in write order; latents are read one row group at a time."""
        self._refresh()
        index = self._index
        for part_number, name in enumerate(list(index.files)):
            mine = index.part == part_number
            wanted = set(zip(index.group[mine].tolist(), index.row[mine].tolist()))
            if wanted:
                yield from self._iter_part(part_number, self.root / name, wanted)

    def _iter_part(self, part_number: int, path: Path, wanted: set[tuple[int, int]]) -> Iterator[Midpoint]:
        """The wanted rows of one part, each checked before any is yielded: a part found
        damaged midway is quarantined whole and yields nothing."""
        entries = []
        try:
            for group, rows in enumerate(iter_row_groups(path, (*LATENT_COLUMNS, "embedding"))):
                for row_number, row in enumerate(rows):
                    if (group, row_number) in wanted:
                        latent = self._decode(row, path)
                        embedding = np.asarray(row["embedding"], dtype=np.float32)
                        entries.append(Midpoint(row["scene_id"], latent, embedding, cell=row["cell"], seed=row["seed"]))
        except BankError as exc:
            self._index.quarantine(part_number, str(exc))
            return
        yield from entries

    def _refresh(self) -> None:
        """Index part files that appeared since the last call; rebuild if any vanished."""
        names = list_parts(self.root)
        known = self._index.files
        if names[: len(known)] != known:  # a file was removed or sorts before a known one
            self._index = KeyIndex()
            known = []
        for name in names[len(known) :]:
            self._index.add_part(self.root, name, self.key)

    def _load(self, position: int) -> np.ndarray | None:
        """The latent at index `position`, or None after quarantining its part if any check fails."""
        index = self._index
        part = int(index.part[position])
        path = self.root / index.files[part]
        try:
            row = read_row(path, int(index.group[position]), int(index.row[position]))
            expected = (int(index.scene[position]), int(index.cell[position]), int(index.seed[position]))
            if (row["scene_id"], row["cell"], row["seed"]) != expected:
                raise BankError(f"{path}: row moved (expected scene, cell, seed {expected}); was the file rewritten?")
            return self._decode(row, path)
        except BankError as exc:
            index.quarantine(part, str(exc))
            return None

    def _decode(self, row: dict, path: Path) -> np.ndarray:
        if not self.key.matches(row):
            raise BankError(
                f"{path}: entry for scene {row['scene_id']} was made by model {row['model_hash']}, sampler "
                f"{row['sampler_hash']}, t_mid {row['t_mid']}, not by this bank's key {self.key}"
            )
        return decode_latent(row, path=path)

    def _check_embedding(self, embedding: np.ndarray) -> np.ndarray:
        """`embedding` as finite float32 `[D]`, of the same D as the stored entries."""
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.ndim != 1 or vector.size == 0 or not np.isfinite(vector).all():
            raise ValueError(f"an embedding must be a non-empty finite vector [D], got shape {vector.shape}")
        stored = self._index.embedding
        if stored is not None and stored.shape[1] != vector.size:
            raise ValueError(f"embedding has {vector.size} values, entries in {self.root} have {stored.shape[1]}")
        return vector

    def _new_midpoints(self, midpoints: Sequence[Midpoint]) -> list[Midpoint]:
        """The midpoints not yet stored, first of each repeated triple, with checked embeddings."""
        midpoints = list(midpoints)
        dims = {self._check_embedding(m.embedding).size for m in midpoints}
        if len(dims) > 1:
            raise ValueError(f"embeddings of one put must share one size, got sizes {sorted(dims)}")
        scene = np.array([m.scene_id for m in midpoints], dtype=np.int64)
        cell = np.array([m.cell for m in midpoints], dtype=np.int32)
        seed = np.array([m.seed for m in midpoints], dtype=np.int64)
        if (cell < -1).any():
            raise ValueError(f"cell must be -1 (static) or a cell index >= 0, got {int(cell.min())}")
        stored = self._index.contains(scene, cell, seed)
        seen: set[tuple[int, int, int]] = set()
        fresh = []
        for m, triple, old in zip(midpoints, zip(scene.tolist(), cell.tolist(), seed.tolist()), stored):
            if not old and triple not in seen:
                seen.add(triple)
                fresh.append(m)
        return fresh


def is_sealed(root: Path | str) -> bool:
    """Whether bank `root` is sealed: a pipeline output that only its own stage may change."""
    root = Path(root)
    record = read_record(root) if root.is_dir() else None
    return record is not None and record.sealed


def set_sealed(root: Path | str, sealed: bool) -> None:
    """Seal bank `root` (puts refused) or unseal it, recording its parts as they are now."""
    root = Path(root)
    with writer_lock(root):
        record = current_record(root)
        record.sealed = sealed
        write_record(root, record)
