"""The request contract of the served RadioDiff-Flux model, checked before any model code runs.

A request is one or more maps (rows), each with
- `buildings`: `[256, 256]` layout at 1 m per pixel, 0/1 (or 0/255), 1 = building;
- `tx`: the transmitter pixel `(row, col)`, integers in 0..255, on (or within 2 px of) free space;
- `cars`: optional `[256, 256]` car mask, 0/1 (or 0/255); absent, null or NaN means no cars.

It comes as a pandas DataFrame (one row per map, what MLflow's scoring server hands over),
or a dict: one map (2-D `buildings`, `tx` of 2) or a batch (`[N, 256, 256]`, `[N, 2]`).
Every problem is a `UserError` naming the row and the field; the row count is checked first,
so an oversized request costs no per-map work. Columns beyond these three are ignored, as
MLflow's own schema check does with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from radiodiff.config import SOURCE_MAP_SIZE
from radiodiff.data.layout import validate_mask
from radiodiff.errors import UserError

MAX_ROWS = 16  # maps per request: a batch of 16 at 64x64 is ~1 s of stage 2 on 2 CPU cores
REQUIRED = ("buildings", "tx")
OPTIONAL = ("cars",)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare by
class MapRequest:
    """One checked map: `buildings` `[256, 256]` bool, `tx` (row, col) ints, `cars` `[256, 256]`
    bool or None. The Tx may still lie in a building: `prepare_query` snaps or refuses it."""

    buildings: np.ndarray
    tx: tuple[int, int]
    cars: np.ndarray | None


def parse_request(model_input: Any, *, max_rows: int = MAX_ROWS) -> list[MapRequest]:
    """Check a request (DataFrame or dict, see the module docstring) and return its maps."""
    rows = _rows(model_input)
    if not rows:
        raise UserError("the request holds no map: send at least one row")
    if len(rows) > max_rows:
        raise UserError(f"the request holds {len(rows)} maps; at most {max_rows} per request")
    return [_parse_row(i, row) for i, row in enumerate(rows)]


def _rows(model_input: Any) -> list[Mapping[str, Any]]:
    """The request as one mapping per map, with only the known fields."""
    if isinstance(model_input, pd.DataFrame):
        _check_fields(model_input.columns)
        fields = [c for c in (*REQUIRED, *OPTIONAL) if c in model_input.columns]
        return model_input[fields].to_dict(orient="records")
    if isinstance(model_input, Mapping):
        _check_fields(model_input.keys())
        if _ndim(model_input["buildings"], "buildings") == 3:
            return _split_batch(model_input)
        return [model_input]
    raise UserError(f"expected a pandas DataFrame or a dict with keys {', '.join(REQUIRED + OPTIONAL)}; "
                    f"got {type(model_input).__name__}")


def _check_fields(names) -> None:
    missing = [name for name in REQUIRED if name not in set(names)]
    if missing:
        raise UserError(f"the request lacks field(s) {', '.join(missing)}; expected buildings, tx and "
                        "optionally cars")


def _split_batch(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of a dict batch: `buildings` `[N, H, W]`, `tx` `[N, 2]`, `cars` `[N, H, W]` or absent."""
    buildings = _numbers(batch["buildings"], "buildings")
    tx = _numbers(batch["tx"], "tx")
    cars = None if _absent(batch.get("cars")) else _numbers(batch["cars"], "cars")
    count = len(buildings)
    if tx.ndim != 2 or len(tx) != count or (cars is not None and len(cars) != count):
        shapes = f"buildings {buildings.shape}, tx {tx.shape}" + ("" if cars is None else f", cars {cars.shape}")
        raise UserError(f"a batch needs buildings [N, 256, 256], tx [N, 2] and cars [N, 256, 256]; got {shapes}")
    return [{"buildings": buildings[i], "tx": tx[i], "cars": None if cars is None else cars[i]}
            for i in range(count)]


def _parse_row(index: int, row: Mapping[str, Any]) -> MapRequest:
    where = f"map {index}"
    buildings = validate_mask(_numbers(row["buildings"], f"{where}: buildings"), name=f"{where}: buildings",
                              size=SOURCE_MAP_SIZE)
    cars = row.get("cars")
    if not _absent(cars):
        cars = validate_mask(_numbers(cars, f"{where}: cars"), name=f"{where}: cars", size=SOURCE_MAP_SIZE)
    return MapRequest(buildings=buildings, tx=_tx(row["tx"], where), cars=None if _absent(cars) else cars)


def _tx(value: Any, where: str) -> tuple[int, int]:
    """(row, col) from two finite whole numbers; the range is checked against the map later."""
    tx = _numbers(value, f"{where}: tx")
    if tx.shape != (2,):
        raise UserError(f"{where}: tx must be two numbers (row, col), got shape {tx.shape}")
    if tx.dtype == bool or not np.isfinite(tx).all() or not np.array_equal(tx, np.rint(tx)):
        raise UserError(f"{where}: tx must be two whole pixel numbers (row, col), got {tx.tolist()}")
    if np.abs(tx).max() >= 2**31:  # before int(): keeps the later range message readable
        raise UserError(f"{where}: tx {tx.tolist()} lies outside the {SOURCE_MAP_SIZE}x{SOURCE_MAP_SIZE} map")
    return int(tx[0]), int(tx[1])


def _numbers(value: Any, name: str) -> np.ndarray:
    """`value` as a numeric (or bool) array; ragged lists, strings and objects are refused."""
    try:
        array = np.asarray(value)
    except ValueError:  # numpy refuses ragged nested lists
        raise UserError(f"{name}: not a rectangular array (rows of different lengths)") from None
    if array.dtype != bool and not np.issubdtype(array.dtype, np.number):
        raise UserError(f"{name}: expected numbers, got values of type {array.dtype}")
    return array


def _ndim(value: Any, name: str) -> int:
    return _numbers(value, name).ndim


def _absent(value: Any) -> bool:
    """Whether an optional field is missing: None, or the NaN / NA pandas puts in an empty cell
    (also as the 0-d array MLflow makes of a JSON `null` under `inputs`)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))
