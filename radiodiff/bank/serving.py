"""A serving bank: a writable bank layered over a sealed, built one.

`build_bank` seals the bank it writes: it is a pipeline output (DVC tracks it), and a
server that stored its misses there would change a tracked output and dirty the pipeline.
`ServingBank` reads the built bank first and a serving bank of its own second, and stores
every new midpoint in the serving bank only, so the built one is never written.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from radiodiff.bank.store import Midpoint, MidpointBank


class ServingBank:
    """`built` (read only) under `served` (where puts go), with MidpointBank's lookups.

    A lookup takes the built bank's entry when both hold one; `nearest` takes the closer of
    the two banks' best entries.
    """

    def __init__(self, built: MidpointBank, served: MidpointBank) -> None:
        if built.key != served.key:
            raise ValueError(f"the two banks must share one key, got {built.key} and {served.key}")
        self.built, self.served = built, served
        self.key = built.key

    @property
    def root(self) -> Path:
        """Where new midpoints are stored."""
        return self.served.root

    @property
    def quarantined(self) -> dict[str, str]:
        """Damaged part files of either bank, by path."""
        return {str(bank.root / name): reason for bank in (self.built, self.served)
                for name, reason in bank.quarantined.items()}

    def get(self, scene_id: int, *, cell: int = -1, seed: int = 0) -> np.ndarray | None:
        latent = self.built.get(scene_id, cell=cell, seed=seed)
        return latent if latent is not None else self.served.get(scene_id, cell=cell, seed=seed)

    def has(self, scene_id: int, *, cell: int = -1, seed: int = 0) -> bool:
        return self.built.has(scene_id, cell=cell, seed=seed) or self.served.has(scene_id, cell=cell, seed=seed)

    def nearest(self, embedding: np.ndarray, max_distance: float, *, cell: int = -1, seed: int = 0,
                exclude: Collection[int] = ()) -> tuple[int, float, np.ndarray] | None:
        found = [hit for bank in (self.built, self.served)
                 if (hit := bank.nearest(embedding, max_distance, cell=cell, seed=seed, exclude=exclude)) is not None]
        return min(found, key=lambda hit: hit[1]) if found else None

    def put(self, midpoints: Sequence[Midpoint]) -> int:
        """Store the midpoints neither bank holds, in the serving bank."""
        fresh = [m for m in midpoints if not self.built.has(m.scene_id, cell=m.cell, seed=m.seed)]
        return self.served.put(fresh) if fresh else 0

    def __len__(self) -> int:
        return len(self.built) + len(self.served)


def default_serving_dir(built_dir: Path | str) -> Path:
    """Where the serving bank of built bank `built_dir` lives unless told: beside it, as
    `<name>-serving` (outside the tracked output, so `dvc status` stays clean)."""
    built_dir = Path(built_dir)
    return built_dir.with_name(f"{built_dir.name}-serving")


def open_bank(bank_dir: Path | str, key, serving_dir: Path | str | None = None) -> MidpointBank | ServingBank:
    """The bank a server reads and writes at `bank_dir`: the bank itself when it is open and
    no `serving_dir` is given; else a `ServingBank` over it, storing misses in `serving_dir`
    (default `default_serving_dir(bank_dir)`), so that a bank `build_bank` sealed, or one
    the caller wants kept as it is, is never written."""
    from radiodiff.bank.store import is_sealed

    bank_dir = Path(bank_dir)
    if serving_dir is None and not is_sealed(bank_dir):
        return MidpointBank(bank_dir, key)
    served = Path(serving_dir) if serving_dir is not None else default_serving_dir(bank_dir)
    return ServingBank(MidpointBank(bank_dir, key), MidpointBank(served, key))
