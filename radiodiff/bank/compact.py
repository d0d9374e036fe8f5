"""Compaction, export and statistics of a whole bank directory (every key in it).

A bank grows by one part file per write; `compact_bank` merges them into one, under the
writer lock: the bank is verified first (a damaged bank is never rewritten), then the
merged part is announced, published, and committed with the old parts removed (see
`commit.py`: a compaction killed midway is finished or undone by the next writer). A reader
that sees the merged part beside old ones serves each entry once, from the older file. A
sealed bank (a `build_bank` output, tracked by DVC) is not compacted: that would change a
pipeline output behind DVC's back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from radiodiff.bank.commit import current_record, publish_part
from radiodiff.bank.key import BankKey
from radiodiff.bank.parts import list_parts, reading, write_part
from radiodiff.bank.record import BankRecord, part_record, write_record, writer_lock
from radiodiff.bank.schema import BankError
from radiodiff.bank.verify import KEY_FIELDS, inspect_bank, require_bank, verify_bank
from radiodiff.io import atomic_dir


def compact_bank(root: Path | str) -> dict:
    """Merge every part of bank `root` into one; returns {"before": parts, "after": parts,
    "entries": rows}. Raises BankError (nothing changed) if the bank does not verify or is sealed."""
    root = Path(root)
    require_bank(root)  # before the lock, whose file would turn any folder into an empty bank
    with writer_lock(root):
        record = current_record(root)
        if record.sealed:
            raise BankError(f"{root}: the bank is sealed (a build_bank output that DVC tracks); "
                            "compact its serving bank instead, or rebuild it with `dvc repro build_bank`")
        counts = verify_bank(root, writer_lock_held=True)
        names = list_parts(root)
        if len(names) <= 1:
            return {"before": len(names), "after": len(names), "entries": counts["entries"]}
        tables = []
        for name in names:
            with reading(root / name) as part:
                tables.append(part.read(use_threads=False))
        merged = pa.concat_tables(tables).combine_chunks()
        publish_part(root, record, merged, replaces=names)
    return {"before": len(names), "after": 1, "entries": merged.num_rows}


def export_bank(source: Path | str, target: Path | str, keys: Iterable[BankKey]) -> int:
    """Write the entries of `keys` in bank `source` as a new sealed bank at `target` (one part,
    its record), replacing whatever `target` held; returns the entries written.

    The bank is assembled beside `target` and renamed into place (`atomic_dir`), so a reader
    sees the old bank or the new one, never a mix, and a run killed mid-swap has its old bank
    put back by the next; `source` is settled and verified first, its entries not changed.
    """
    source, target = Path(source), Path(target)
    wanted = {(key.model_hash, key.sampler_hash, float(key.t_mid)) for key in keys}
    with writer_lock(source):
        current_record(source)  # a cut-short write is settled first, so no part is read twice
        verify_bank(source, writer_lock_held=True)
        tables = []
        for name in list_parts(source):
            with reading(source / name) as part:
                table = part.read(use_threads=False)
            keep = [(m, s_, float(t)) in wanted for m, s_, t in zip(table["model_hash"].to_pylist(),
                                                                     table["sampler_hash"].to_pylist(),
                                                                     table["t_mid"].to_pylist())]
            tables.append(table.filter(pa.array(keep, type=pa.bool_())))
    with atomic_dir(target) as staging:
        rows = 0
        record = BankRecord(sealed=True)
        if tables:
            merged = pa.concat_tables(tables).combine_chunks()
            rows = merged.num_rows
            if rows:
                path = write_part(staging, merged)
                record.parts[path.name] = part_record(path, rows)
        write_record(staging, record)
    return rows


def bank_stats(root: Path | str) -> dict:
    """Parts, entries, bytes, whether sealed, and entries per (model, sampler, t_mid) key of
    bank `root`; `problems` counts what verify names (it reads the whole bank to know)."""
    root = Path(root)
    report = inspect_bank(root)
    per_key: Counter = Counter()
    for name in list_parts(root):
        if name in report.damaged:
            continue
        with reading(root / name) as part:
            table = part.read(columns=list(KEY_FIELDS[:3]), use_threads=False)
        keys = pc.binary_join_element_wise(table["model_hash"], table["sampler_hash"],
                                           pc.cast(table["t_mid"], pa.string()), "|")
        per_key.update(keys.to_pylist())
    size = sum((root / name).stat().st_size for name in list_parts(root))
    return {"parts": report.files, "entries": report.entries, "bytes": size, "sealed": report.sealed,
            "recorded": report.recorded, "problems": len(report.problems),
            "keys": {key: per_key[key] for key in sorted(per_key)}}
