"""How a part file enters a bank: announced in the record, published, then committed.

A bank's record (`bank.json`) must list every part file, or `verify` takes the part for one
copied in from elsewhere. A writer cannot publish a part and update the record in one
atomic step, and SIGKILL (the OOM killer, a cancelled worker) runs no cleanup, so a writer
holding the bank's lock goes through three steps, each one atomic:

1. announce: the record lists the part's name as `pending`, with what it will replace;
2. publish: the part file appears under that name, whole (a rename);
3. commit: the parts it replaces are removed, and the record lists it among `parts`.

A writer killed after 1 leaves a pending name. The next writer, under the lock, settles it
(`current_record`): a part that was published and reads back whole is committed, so a
killed build keeps the work it finished; one that never appeared, or is damaged, is undone.
Until then `verify` accepts a pending part that reads back whole, and the parts it replaces
are ignored (see `verify.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from radiodiff.bank.parts import list_parts, new_part_name, write_part
from radiodiff.bank.record import BankRecord, PendingPart, part_record, read_record, write_record
from radiodiff.bank.schema import BankError
from radiodiff.bank.verify import checked_keys
from radiodiff.io import signals_deferred


def current_record(root: Path) -> BankRecord:
    """The record of bank `root` with any cut-short write settled (call with the writer lock
    held). A bank from before records gets one listing its readable parts as they are."""
    record = read_record(root)
    if record is None:
        record = BankRecord()
        for name in list_parts(root):
            rows = _row_count(root / name)
            if rows is not None:  # an unreadable part stays out of the record: verify names it
                record.parts[name] = part_record(root / name, rows)
        return record
    for name in sorted(record.pending):
        if _published_whole(root / name, record.pending[name].rows):
            _commit(root, record, name)
        else:
            (root / name).unlink(missing_ok=True)  # never published, or damaged since: undone
            del record.pending[name]
            write_record(root, record)
    return record


def publish_part(root: Path, record: BankRecord, table: pa.Table, replaces: Sequence[str] = ()) -> Path:
    """Add `table` to bank `root` as a new part, removing the parts `replaces`, through the
    announce-publish-commit steps (call with the writer lock held and `record` from
    `current_record`, which this updates). Ctrl-C is held until the record is final."""
    name = new_part_name(root)
    with signals_deferred():
        record.pending[name] = PendingPart(rows=table.num_rows, replaces=tuple(replaces))
        write_record(root, record)
        path = write_part(root, table, name)
        _commit(root, record, name)
    return path


def _commit(root: Path, record: BankRecord, name: str) -> None:
    """Step 3 for pending part `name`, published whole: remove what it replaces, then list it.
    Repeating it after a kill midway is harmless: removed files are skipped."""
    pending = record.pending[name]
    for old in pending.replaces:
        (root / old).unlink(missing_ok=True)
        record.parts.pop(old, None)
    record.parts[name] = part_record(root / name, pending.rows)
    del record.pending[name]
    write_record(root, record)


def _published_whole(path: Path, rows: int) -> bool:
    """Whether `path` exists and reads back whole: every page checksum, latent and embedding
    checked, and the `rows` the writer announced."""
    if not path.is_file():
        return False
    try:
        return sum(1 for _ in checked_keys(path)) == rows
    except BankError:
        return False


def _row_count(path: Path) -> int | None:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:  # noqa: BLE001 - any unreadable file: left for verify to report
        return None
