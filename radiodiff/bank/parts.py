"""Part files of a midpoint bank: one Parquet file per write, read one row group at a time.

A bank directory holds `part-<16 hex>.parquet` files. The name starts with the write time
(milliseconds, 12 hex digits) so that sorting the names replays the writes in order, and
ends with 4 random hex digits so two writers in the same millisecond do not collide.
Files are published by rename (`radiodiff.io.atomic_path`); the temporaries start with
"." and are never listed. Every other `*.parquet` file in the directory is treated as a
part, so a foreign file is reported instead of silently ignored.

Every function here checks the schema of the file it opens and turns pyarrow and OS
errors into a BankError naming the file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from radiodiff.bank.schema import LATENT_COLUMNS, BankError, schema_problem
from radiodiff.io import atomic_path, safe_child

ROW_GROUP_ROWS = 256  # a lookup reads one row group: at 3x64x64 float32 about 12 MB


def list_parts(root: Path) -> list[str]:
    """Sorted names of the part files in `root` (none if `root` does not exist yet)."""
    if not root.exists():
        return []
    if not root.is_dir():
        raise BankError(f"{root}: a midpoint bank must be a directory, this is a file")
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.name.endswith(".parquet") and not e.name.startswith("."))


def new_part_name(root: Path) -> str:
    """A part file name that sorts after the existing ones and is not taken in `root`."""
    while True:
        name = f"part-{time.time_ns() // 1_000_000:012x}{secrets.token_hex(2)}.parquet"
        if not safe_child(root, name).exists():
            return name


def write_part(root: Path, table: pa.Table, name: str | None = None) -> Path:
    """Publish `table` as part file `name` (a new one if None) in `root`, by rename: the
    name appears only once the file is whole. Existing files are never touched."""
    path = safe_child(root, name or new_part_name(root))
    if path.exists():
        raise BankError(f"{path}: a part of this name exists; parts are never rewritten")
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            row_group_size=ROW_GROUP_ROWS,
            use_dictionary=["model_hash", "sampler_hash", "dtype"],
            write_statistics=["scene_id", "cell", "seed", "t_mid"],
            write_page_checksum=True,  # a CRC per data page: a flipped byte in any column is caught
        )
    return path


@contextlib.contextmanager
def reading(path: Path) -> Iterator[pq.ParquetFile]:
    """Open part file `path` with its schema checked; any read error becomes a BankError."""
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as part:
            problem = schema_problem(part.schema_arrow)
            if problem is not None:
                raise BankError(f"{path}: {problem}")
            yield part
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: e.g. a column name no longer UTF-8
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BankError(f"{path}: cannot read as a bank Parquet file: {reason}") from exc


def read_index_columns(path: Path, columns: Sequence[str]) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The small `columns` of every row of `path`, plus each row's row group and row
    within that group (int32 arrays, one value per row)."""
    with reading(path) as part:
        table = part.read(columns=list(columns), use_threads=False)  # small columns: threads only add memory
        sizes = [part.metadata.row_group(i).num_rows for i in range(part.metadata.num_row_groups)]
    if sum(sizes) != table.num_rows:  # a damaged footer: row positions would point at wrong rows
        raise BankError(f"{path}: footer lists {sum(sizes)} rows, the data holds {table.num_rows}")
    for name in columns:
        if table[name].null_count:
            raise BankError(f"{path}: column {name!r} has missing values")
    groups = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    starts = np.repeat(np.cumsum([0] + sizes[:-1]), sizes)
    rows = (np.arange(len(groups)) - starts).astype(np.int32)
    return table, groups, rows


def read_row(path: Path, group: int, row: int) -> dict:
    """The `LATENT_COLUMNS` of one row, read from its row group only."""
    with reading(path) as part:
        if not 0 <= group < part.metadata.num_row_groups:
            raise BankError(f"{path}: row group {group} is missing; was the file rewritten?")
        table = part.read_row_group(group, columns=list(LATENT_COLUMNS))
    if not 0 <= row < table.num_rows:
        raise BankError(f"{path}: row {row} of row group {group} is missing; was the file rewritten?")
    return table.slice(row, 1).to_pylist()[0]


def iter_row_groups(path: Path, columns: Sequence[str] = LATENT_COLUMNS) -> Iterator[list[dict]]:
    """The rows of `path`, one row group at a time, as lists of dicts of `columns`."""
    with reading(path) as part:
        for group in range(part.metadata.num_row_groups):
            yield part.read_row_group(group, columns=list(columns)).to_pylist()
