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
        ("cars", pa.bool_()),  # a traffic sample: the map's cars are obstacles (its static twin: same Tx, False)
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
    (buildings 0/1; the map's cars as pixel coverage x 255: a sample sees them only when its
    index row says `cars`).
    Returns the index as a DataFrame.
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
    """Stream the split's shards into preallocated `.npy` files, one shard in memory at a time
    (stacking the paper profile's train split would take ~10 GB, twice that while copying);
    the files are the same bytes `np.save` of the stacked arrays writes."""
    sizes = []
    for _, path in members:
        with np.load(path) as shard:
            sizes.append((len(shard["tx_ids"]), shard["buildings"].shape))
    if not members:
        return []
    total, shape = sum(n for n, _ in sizes), sizes[0][1]
    arrays = {name: np.lib.format.open_memmap(safe_child(folder, f"{split}_{name}.npy"), mode="w+", dtype=dtype,
                                              shape=shape_of)
              for name, dtype, shape_of in (("gain", np.float32, (total, *shape)), ("los", np.uint8, (total, *shape)),
                                            ("scenes", np.uint8, (len(members), 2, *shape)))}
    rows, offset = [], 0
    for scene_offset, (map_id, path) in enumerate(members):
        with np.load(path) as shard:
            count = len(shard["tx_ids"])
            arrays["gain"][offset:offset + count] = shard["gain"]
            arrays["los"][offset:offset + count] = shard["los"]
            # buildings 0/1; cars as their pixel coverage in steps of 1/255
            arrays["scenes"][scene_offset] = np.stack([shard["buildings"], np.rint(255 * shard["cars"])])
            for k, (tx_id, (row, col), cars) in enumerate(zip(shard["tx_ids"], shard["tx"], shard["with_cars"])):
                rows.append((offset + k, split, map_id, int(tx_id), int(row), int(col), bool(cars),
                             f"{split}_gain.npy", offset + k, f"{split}_scenes.npy", scene_offset))
        offset += count
    for array in arrays.values():
        array.flush()
    del arrays  # close the maps before the folder is moved into place
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
