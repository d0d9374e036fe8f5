"""Check a whole midpoint bank directory: every file readable, every latent intact."""

from __future__ import annotations

from pathlib import Path

from radiodiff.bank.parts import iter_row_groups, list_parts
from radiodiff.bank.schema import BankError, decode_latent


def verify_bank(root: Path | str) -> dict:
    """Read every part file of bank `root` in full, one row group at a time: schema version,
    readability, and every latent's checksum, shape and dtype.

    Returns {"files": number of part files, "entries": number of rows, all keys}; raises
    BankError on the first problem.
    """
    root = Path(root)
    if not root.exists():
        raise BankError(f"{root}: no such midpoint bank directory")
    names = list_parts(root)
    entries = 0
    for name in names:
        path = root / name
        for rows in iter_row_groups(path):
            for row in rows:
                decode_latent(row, path=path)
            entries += len(rows)
    return {"files": len(names), "entries": entries}
