"""Turn finished map shards into the dataset: memory-mappable arrays and a Parquet index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from radiodiff.data.split import SPLITS
from radiodiff.io import atomic_dir, safe_child

INDEX_FILE = "index.parquet"
INDEX_SCHEMA = pa.schema(
    [
        ("sample", pa.int64()),  # row in {split}_gain.npy
        ("split", pa.string()),
        ("map_id", pa.int32()),
        ("tx_id", pa.int32()),  # published RadioMapSeer Tx id (0..79)
        ("tx_row", pa.int32()),  # Tx pixel at the dataset's resolution
        ("tx_col", pa.int32()),
        ("file", pa.string()),  # gain array, relative to the dataset folder
        ("offset", pa.int64()),
        ("scene_file", pa.string()),  # buildings/cars array of the map
        ("scene_offset", pa.int64()),
    ]
)


def assemble(shards: list[tuple[str, int, Path]], out_dir: Path) -> pd.DataFrame:
    """Write the dataset folder atomically from `(split, map_id, shard path)` triples.

    Per split: `{split}_gain.npy` `[N, H, W]` float32 in [0, 1], `{split}_los.npy` `[N, H, W]`
    uint8 (line of sight from the Tx) and `{split}_scenes.npy` `[M, 2, H, W]` uint8
    (buildings, cars). Returns the index as a DataFrame.
    """
    rows = []
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            members = [(map_id, path) for s, map_id, path in shards if s == split]
            rows += _write_split(split, members, tmp)
        index = pd.DataFrame(rows, columns=INDEX_SCHEMA.names)
        pq.write_table(pa.Table.from_pandas(index, schema=INDEX_SCHEMA, preserve_index=False), tmp / INDEX_FILE)
    return index


def _write_split(split: str, members: list[tuple[int, Path]], folder: Path) -> list[tuple]:
    gains, los, scenes, rows = [], [], [], []
    for scene_offset, (map_id, path) in enumerate(members):
        with np.load(path) as shard:
            for tx_id, (row, col), gain, visible in zip(shard["tx_ids"], shard["tx"], shard["gain"], shard["los"]):
                offset = len(gains)
                gains.append(gain)
                los.append(visible)
                rows.append((offset, split, map_id, int(tx_id), int(row), int(col),
                             f"{split}_gain.npy", offset, f"{split}_scenes.npy", scene_offset))
            scenes.append(np.stack([shard["buildings"], shard["cars"]]).astype(np.uint8))
    if gains:
        np.save(safe_child(folder, f"{split}_gain.npy"), np.stack(gains).astype(np.float32))
        np.save(safe_child(folder, f"{split}_los.npy"), np.stack(los).astype(np.uint8))
        np.save(safe_child(folder, f"{split}_scenes.npy"), np.stack(scenes))
    return rows


def read_index(dataset_dir: Path) -> pd.DataFrame:
    """The dataset's index, checked against the expected schema."""
    from radiodiff.errors import UserError

    path = Path(dataset_dir) / INDEX_FILE
    if not path.is_file():
        raise UserError(f"no dataset index at {path}: run the prepare stage first")
    table = pq.read_table(path)
    if not table.schema.equals(INDEX_SCHEMA, check_metadata=False):
        raise UserError(f"{path}: unexpected index schema; re-run prepare")
    return table.to_pandas()
