"""Compaction and statistics of a whole bank directory (every key in it).

A bank grows by one part file per write; `compact_bank` merges them into one, under the
writer lock: the bank is verified first (a damaged bank is never rewritten), the merged
part is published and the record switched to it in one atomic replace, and only then are
the old parts removed. A reader sees the old parts or the new one, each entry once. A
sealed bank (a `build_bank` output, tracked by DVC) is not compacted: that would change a
pipeline output behind DVC's back.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from radiodiff.bank.parts import list_parts, reading, write_part
from radiodiff.bank.record import BankRecord, part_record, read_record, write_record, writer_lock
from radiodiff.bank.schema import BankError
from radiodiff.bank.verify import KEY_FIELDS, inspect_bank, verify_bank


def compact_bank(root: Path | str) -> dict:
    """Merge every part of bank `root` into one; returns {"before": parts, "after": parts,
    "entries": rows}. Raises BankError (nothing changed) if the bank does not verify or is sealed."""
    root = Path(root)
    if not root.is_dir():
        raise BankError(f"{root}: no such midpoint bank directory")
    with writer_lock(root):
        record = read_record(root) or BankRecord()
        if record.sealed:
            raise BankError(f"{root}: the bank is sealed (a build_bank output that DVC tracks); "
                            "compact its serving bank instead, or rebuild it with `dvc repro build_bank`")
        counts = verify_bank(root)
        names = list_parts(root)
        if len(names) <= 1:
            return {"before": len(names), "after": len(names), "entries": counts["entries"]}
        tables = []
        for name in names:
            with reading(root / name) as part:
                tables.append(part.read(use_threads=False))
        merged = pa.concat_tables(tables).combine_chunks()
        path = write_part(root, merged)
        record.parts = {path.name: part_record(path, merged.num_rows)}
        write_record(root, record)  # the switch: from here the record lists the merged part only
        for name in names:
            (root / name).unlink()
    return {"before": len(names), "after": 1, "entries": merged.num_rows}


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
