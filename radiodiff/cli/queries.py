"""Query files of `radiodiff predict --queries`: many maps from one process, one JSON object a line.

    {"buildings": "layouts/a.png", "tx": [120, 64]}
    {"buildings": "layouts/a.png", "tx": [30, 200], "cars": "cars/a.png"}

`buildings` and `cars` (optional) are 256 x 256 binary PNGs as for a single query, relative
to the query file's folder; `tx` is the Tx pixel on them. Blank lines are skipped. The whole
file is read and checked before the model runs, so a mistake on the last line costs no
model time and writes no map; each error names the file and the line.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from radiodiff.errors import UserError

KEYS = frozenset({"buildings", "tx", "cars"})
MASK_CACHE = 16  # distinct PNGs kept while reading: queries usually share a few layouts


def read_queries(path: Path, resolution: int) -> list:
    """The `serve.Query` of every line of query file `path`, at the model's `resolution`.

    Masks read once per distinct file (within the last `MASK_CACHE`); only the downsampled
    queries (`[resolution, resolution]` bool each) are kept. Raises UserError on any mistake.
    """
    from radiodiff.data.layout import read_mask_png
    from radiodiff.serve import prepare_query

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--queries: file not found: {path}")
    read_mask = functools.lru_cache(maxsize=MASK_CACHE)(functools.partial(read_mask_png, size=None))
    queries = []
    for number, fields in _lines(path):
        try:
            buildings, tx, cars = _fields(fields, path.parent)
            queries.append(prepare_query(read_mask(buildings), tx, None if cars is None else read_mask(cars),
                                         resolution))
        except UserError as exc:
            raise UserError(f"{path} line {number}: {exc}") from None
    if not queries:
        raise UserError(f"{path}: no queries (one JSON object a line)")
    return queries


def _lines(path: Path):
    """(line number, parsed JSON object) of each non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the query file ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        except RecursionError:  # deeply nested arrays: no query is nested at all
            raise UserError(f"{path} line {number}: JSON nested too deeply to be a query") from None
        if not isinstance(fields, dict):
            raise UserError(f"{path} line {number}: expected a JSON object, got {type(fields).__name__}")
        yield number, fields


def _fields(fields: dict, folder: Path) -> tuple[Path, tuple[int, int], Path | None]:
    """(buildings path, Tx pixel, cars path or None) of one parsed line, types checked."""
    unknown = sorted(set(fields) - KEYS)
    if unknown:
        raise UserError(f"unknown key(s) {unknown}; a query has {sorted(KEYS)}")
    if "buildings" not in fields or "tx" not in fields:
        raise UserError("a query needs 'buildings' (a PNG path) and 'tx' ([row, col])")
    tx = fields["tx"]
    # bool is an int to Python, but true/false is never a pixel index
    if not (isinstance(tx, list) and len(tx) == 2 and all(type(v) is int for v in tx)):
        raise UserError(f"'tx' must be [row, col] integers, got {json.dumps(tx)}")
    paths = []
    for key in ("buildings", "cars"):
        value = fields.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise UserError(f"'{key}' must be a PNG path string, got {json.dumps(value)}")
        paths.append(None if value is None else folder / value)
    return paths[0], (tx[0], tx[1]), paths[1]
