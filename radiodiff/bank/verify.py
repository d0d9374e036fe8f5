"""Check a whole midpoint bank directory: every byte of every part, every key once, the record kept.

What `verify` passes, a lookup serves: it reads every column of every row group with the
Parquet page checksums on (the reads a lookup makes, and more), decodes every latent
against its sha256, and checks every embedding. It also checks that no (key, scene, cell,
seed) is stored twice, and that the part files are exactly those the bank's record lists,
each byte for byte as written (the record's whole-file sha256): a part overwritten by a copy
of another, a footer or statistics byte flipped, or a file dropped in from elsewhere is named.

A part that a killed writer announced (`pending` in the record, see `commit.py`) passes when
it reads back whole: it is the part the writer meant to commit, and the next write commits
it. The parts it replaces are then not checked, since that write removes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radiodiff.bank.parts import list_parts, reading
from radiodiff.bank.record import LOCK_NAME, RECORD_NAME, read_record, reader_lock
from radiodiff.bank.schema import BankError, decode_latent
from radiodiff.io import file_sha256

KEY_FIELDS = ("model_hash", "sampler_hash", "t_mid", "scene_id", "cell", "seed")


@dataclass
class BankReport:
    """What `inspect_bank` found: counts, and one "path: reason" line per problem."""

    files: int = 0
    entries: int = 0
    recorded: bool = False  # whether the bank has a record to check the part set against
    sealed: bool = False
    problems: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # part file names with a problem

    @property
    def ok(self) -> bool:
        return not self.problems


def inspect_bank(root: Path | str, *, writer_lock_held: bool = False) -> BankReport:
    """Check bank `root` in full and report every problem (raises BankError only when `root`
    is not a bank directory at all, or its record cannot be read). The check holds the bank's
    lock shared, unless the caller holds it as a writer (`writer_lock_held`: asking for it
    again would wait for ever)."""
    root = Path(root)
    require_bank(root)
    if writer_lock_held:
        return _inspect(root)
    with reader_lock(root):
        return _inspect(root)


def require_bank(root: Path) -> None:
    """BankError unless `root` is a bank directory: an empty one (a bank nothing was written
    to yet), or one a writer has used, so it holds the record, the lock file or a part. A
    command pointed at another folder (say `models/`) says so, rather than report it as a
    sound empty bank (or, compacting, leave a lock file in it)."""
    if not root.exists():
        raise BankError(f"{root}: no such midpoint bank directory")
    if (root / RECORD_NAME).is_file() or (root / LOCK_NAME).exists():
        return
    if not list_parts(root) and any(root.iterdir()):  # parts alone: a bank written before records existed
        raise BankError(f"{root}: not a midpoint bank: it holds files, but no {RECORD_NAME} and no part file; a "
                        "bank is the folder build_bank writes (bank/, or data/cache/bank while it builds)")


def _inspect(root: Path) -> BankReport:
    names = list_parts(root)
    record = read_record(root)
    report = BankReport(files=len(names), recorded=record is not None, sealed=bool(record and record.sealed))
    if record is not None:  # a cut-short write's part first: what it replaces is then set aside
        pending = [name for name in names if name in record.pending]
        names = pending + [name for name in names if name not in record.pending]
    first_seen: dict[tuple, str] = {}
    superseded: set[str] = set()
    for name in names:
        if name in superseded:
            report.files -= 1
            continue
        path = root / name
        try:
            keys = list(checked_keys(path))
        except BankError as exc:
            report.problems.append(str(exc))
            report.damaged.append(name)
            continue
        if record is not None and name in record.pending:
            if len(keys) != record.pending[name].rows:
                report.problems.append(f"{path}: holds {len(keys)} entries, its writer announced "
                                       f"{record.pending[name].rows} in {RECORD_NAME}")
                report.damaged.append(name)
                continue
            superseded.update(record.pending[name].replaces)
        report.entries += len(keys)
        for key in keys:
            if key in first_seen:
                report.problems.append(f"{path}: scene {key[3]} (cell {key[4]}, seed {key[5]}) of model {key[0]} at "
                                       f"t_mid {key[2]} is stored twice (also in {first_seen[key]})")
                report.damaged.append(name)
                break
            first_seen[key] = name
    if record is not None:
        _check_against_record(root, [name for name in names if name not in superseded], record, superseded, report)
    return report


def verify_bank(root: Path | str, *, writer_lock_held: bool = False) -> dict:
    """`inspect_bank`, raising a one-line BankError naming the first problem (and how many
    more there are); returns {"files": part files, "entries": rows} when the bank is sound."""
    report = inspect_bank(root, writer_lock_held=writer_lock_held)
    if report.problems:
        more = len(report.problems) - 1
        raise BankError(report.problems[0] + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))
    return {"files": report.files, "entries": report.entries}


def checked_keys(path: Path) -> Iterator[tuple]:
    """The key of every row of part `path`, after reading all its columns with page checksums
    on and checking each latent and embedding; BankError on the first fault."""
    with reading(path) as part:
        rows_in_footer = part.metadata.num_rows
        rows_read = 0
        dims = set()
        for group in range(part.metadata.num_row_groups):
            table = part.read_row_group(group, use_threads=False)  # every column: a CRC per page
            rows_read += table.num_rows
            for name in table.column_names:
                if table[name].null_count:
                    raise BankError(f"{path}: column {name!r} has missing values")
            for row in table.to_pylist():
                decode_latent(row, path=path)
                embedding = np.asarray(row["embedding"], dtype=np.float32)
                if embedding.size == 0 or not np.isfinite(embedding).all():
                    raise BankError(f"{path}: scene {row['scene_id']} has an empty or non-finite embedding")
                dims.add((row["model_hash"], row["sampler_hash"], row["t_mid"], embedding.size))
                yield tuple(row[name] for name in KEY_FIELDS)
        if rows_read != rows_in_footer:
            raise BankError(f"{path}: footer lists {rows_in_footer} rows, the data holds {rows_read}")
        if len({key[:3] for key in dims}) != len(dims):
            raise BankError(f"{path}: embeddings of one key have different lengths")


def _check_against_record(root: Path, names: list[str], record, superseded: set[str], report: BankReport) -> None:
    """Parts missing from the directory, parts the record never listed, and parts that
    changed since they were written; a part already reported damaged is not named twice.
    A pending part read back whole in `names` passes; the `superseded` parts it replaces may
    be gone already."""
    on_disk = set(names)
    for name in sorted(set(record.parts) - on_disk - superseded):
        report.problems.append(f"{root / name}: listed in {RECORD_NAME} ({record.parts[name].rows} entries) but "
                               "missing from the bank")
    for name in names:
        if name in report.damaged:
            continue
        path = root / name
        written = record.parts.get(name)
        if name in record.pending:
            continue  # read back whole above (a damaged one is in report.damaged)
        if written is None:
            report.problems.append(f"{path}: not in {RECORD_NAME}; a file the bank never wrote (copied in?)")
            report.damaged.append(name)
        elif path.stat().st_size != written.bytes or file_sha256(path) != written.sha256:
            report.problems.append(f"{path}: changed since it was written (size or sha256 differs from "
                                   f"{RECORD_NAME})")
            report.damaged.append(name)
