"""A bank's own record of what it holds, and the lock its writers take.

`bank.json` in the bank directory lists every part file the bank's writers published, with
its size, sha256 and row count, and whether the bank is sealed (built by `build_bank`, so a
tracked pipeline output that serving must not change). Writers hold an exclusive `flock` on
`.lock` while they check for existing entries, publish a part and update the record, so two
processes missing the same layout at once store it once; `verify` holds it shared, so it
never compares the directory with the record halfway through a write.

A writer names the part it is about to publish in the record (`pending`) before the part
file appears, and moves it to `parts` once it is written (see `commit.py`): a writer killed
in between (SIGKILL runs no cleanup) leaves a part the record announced, which the next writer
adopts or removes, never a part that looks copied in from elsewhere.

`verify` compares the directory against the record: a part that vanished, appeared from
elsewhere, or changed a single byte since it was written is named.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from radiodiff.bank.schema import BankError
from radiodiff.io import atomic_write_text, file_sha256

RECORD_NAME = "bank.json"
LOCK_NAME = ".lock"
RECORD_VERSION = 2  # 2 added `pending`; a version-1 record reads as one with none pending
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a record lists parts, ~150 bytes each: far above any real bank


@dataclass(frozen=True)
class PartRecord:
    """One published part file: `bytes` long, `rows` entries, whole-file `sha256`."""

    bytes: int
    sha256: str
    rows: int


@dataclass(frozen=True)
class PendingPart:
    """A part a writer announced before publishing it: `rows` entries, and the parts it
    `replaces` (a compaction's inputs; none for a put), to be removed once it is in."""

    rows: int
    replaces: tuple[str, ...] = ()


@dataclass
class BankRecord:
    """What the bank's writers published (`parts`, by file name), what a writer announced and
    may not have finished (`pending`, by file name), and whether the bank is `sealed`."""

    parts: dict[str, PartRecord] = field(default_factory=dict)
    sealed: bool = False
    pending: dict[str, PendingPart] = field(default_factory=dict)

    def to_json(self) -> str:
        parts = {name: vars(part) for name, part in sorted(self.parts.items())}
        pending = {name: {"rows": p.rows, "replaces": list(p.replaces)} for name, p in sorted(self.pending.items())}
        return json.dumps({"version": RECORD_VERSION, "sealed": self.sealed, "parts": parts, "pending": pending},
                          indent=1) + "\n"


def part_record(path: Path, rows: int) -> PartRecord:
    """The record of part file `path` as it is on disk now."""
    return PartRecord(bytes=path.stat().st_size, sha256=file_sha256(path), rows=int(rows))


def content_digest(root: Path) -> str:
    """A sha256 of what bank `root` holds: the whole-file digests of its recorded parts, sorted
    (part names are random; equal content gives an equal digest)."""
    record = read_record(root)
    if record is None:
        raise BankError(f"{root}: no {RECORD_NAME}: the bank has no record to digest")
    if record.pending:
        raise BankError(f"{root}: a write was cut short ({', '.join(sorted(record.pending))} pending); "
                        "the bank's next write settles it")
    return hashlib.sha256("\n".join(sorted(p.sha256 for p in record.parts.values())).encode()).hexdigest()


def read_record(root: Path) -> BankRecord | None:
    """The record of bank `root`, or None for a bank written before records existed (or empty)."""
    path = root / RECORD_NAME
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes is not a bank record")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("version") not in (1, RECORD_VERSION):
            raise ValueError(f"record version {raw.get('version')!r}, this code reads 1 to {RECORD_VERSION}")
        parts = {str(name): PartRecord(bytes=int(p["bytes"]), sha256=str(p["sha256"]), rows=int(p["rows"]))
                 for name, p in raw["parts"].items()}
        pending = {str(name): PendingPart(rows=int(p["rows"]), replaces=tuple(str(r) for r in p["replaces"]))
                   for name, p in raw.get("pending", {}).items()}
        return BankRecord(parts=parts, sealed=bool(raw["sealed"]), pending=pending)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise BankError(f"{path}: not a readable bank record ({type(exc).__name__}: {str(exc)[:80]})") from None


def write_record(root: Path, record: BankRecord) -> None:
    """Replace the record of bank `root` atomically (call with the writer lock held)."""
    atomic_write_text(root / RECORD_NAME, record.to_json())


@contextlib.contextmanager
def reader_lock(root: Path) -> Iterator[None]:
    """Hold the bank's lock shared, for a reader that compares the part files with the record:
    no writer is between its steps meanwhile. A bank no writer ever locked (an export, a
    read-only copy) has no lock file to hold and is read as it is."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Hold the bank's exclusive writer lock (a blocking `flock`; released when the process dies)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
