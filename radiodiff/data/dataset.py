"""A torch Dataset over the prepared arrays, memory-mapped (cheap to share with workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from radiodiff.data.assemble import read_index
from radiodiff.data.conditions import TxEncoding, encode_condition
from radiodiff.errors import UserError


class RadioMapDataset(torch.utils.data.Dataset):
    """Samples of one split of a `prepare` output folder.

    Item: dict with `gain` `[1, H, W]` float32 in [0, 1], `cond` `[3 + E, H, W]` float32
    (see `radiodiff.data.conditions`; the cars channel is the map's car coverage per pixel on
    a traffic sample, else zero), `map_id`, `tx_id`, `tx` `[2]` (row, col), `cars` (a traffic sample).
    Arrays are opened lazily in each process (memory-mapped), so DataLoader workers fork
    without copying them.
    """

    def __init__(self, dataset_dir: str | Path, split: str, encodings: tuple[TxEncoding, ...], *,
                 limit: int | None = None) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.encodings = tuple(encodings)
        index = read_index(self.dataset_dir)
        self.index = index[index["split"] == split].sort_values("offset").reset_index(drop=True)
        if limit is not None:
            self.index = self.index.iloc[:limit]
        if self.index.empty:
            raise UserError(f"{self.dataset_dir}: split {split!r} has no samples")
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {
                name: np.load(self.dataset_dir / f"{self.split}_{name}.npy", mmap_mode="r")
                for name in ("gain", "los", "scenes")
            }
        return self._arrays

    def __getitem__(self, item: int) -> dict:
        row = self.index.iloc[item]
        arrays = self._open()
        scene = arrays["scenes"][row.scene_offset]
        tx_row, tx_col = int(row.tx_row), int(row.tx_col)
        cars = scene[1] / np.float32(255) if row.cars else np.zeros(scene.shape[1:], np.float32)
        cond = encode_condition(scene[0] > 0, cars, tx_row, tx_col, self.encodings, los=arrays["los"][row.offset] > 0)
        return {
            "gain": torch.from_numpy(np.array(arrays["gain"][row.offset], dtype=np.float32))[None],
            "cond": torch.from_numpy(cond),
            "map_id": int(row.map_id),
            "tx_id": int(row.tx_id),
            "tx": torch.tensor([tx_row, tx_col]),
            "cars": bool(row.cars),
        }

    def __getstate__(self) -> dict:
        # Worker processes reopen the memory maps themselves.
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state
