"""Checking a layout mask and placing a Tx on it: what the simulator and every reader of user
layouts share (numpy only)."""

from __future__ import annotations

import numpy as np

from radiodiff.errors import UserError

# Real RadioMapSeer Tx sites can sit on a building's rasterised edge: 395 of 56,080 do, one
# of them two pixels deep (map 267, Tx 53). Such a Tx radiates from the nearest free pixel.
TX_SNAP_RADIUS = 2


def validate_mask(array: np.ndarray, *, name: str, size: int | None = 256) -> np.ndarray:
    """Check a layout mask is 2-D, square of `size` and binary (0/1, 0/255, 0/65535 or bool); return bool."""
    array = np.asarray(array)
    if array.ndim != 2 or (size is not None and array.shape != (size, size)):
        want = f"{size}x{size}" if size is not None else "a 2-D image"
        raise UserError(f"{name}: layout has shape {array.shape}, expected {want}")
    if array.dtype == bool:
        return array.copy()
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise UserError(f"{name}: layout must hold finite numbers")
    values = np.unique(array)
    if not any(set(values.tolist()) <= {0, high} for high in (1, 255, 65535)):
        shown = ", ".join(str(v) for v in values[:6])
        raise UserError(f"{name}: layout is not binary (values {shown}...): expected 0 and 255")
    return array > 0


def resolve_tx(buildings: np.ndarray, row: int, col: int) -> tuple[int, int]:
    """The free pixel a Tx at (row, col) radiates from.

    A Tx on a free pixel stays put; one on a building within `TX_SNAP_RADIUS` pixels
    (Chebyshev) of free space moves to the nearest free pixel (ties: smallest row, then col);
    a Tx outside the map or deeper inside a building is a user error.
    """
    height, width = buildings.shape
    if not (0 <= row < height and 0 <= col < width):
        raise UserError(f"Tx ({row}, {col}) lies outside the {height}x{width} map")
    if not buildings[row, col]:
        return int(row), int(col)
    r0, r1 = max(row - TX_SNAP_RADIUS, 0), min(row + TX_SNAP_RADIUS + 1, height)
    c0, c1 = max(col - TX_SNAP_RADIUS, 0), min(col + TX_SNAP_RADIUS + 1, width)
    free_rows, free_cols = np.nonzero(~buildings[r0:r1, c0:c1])
    if len(free_rows) == 0:
        raise UserError(f"Tx ({row}, {col}) lies inside a building (more than {TX_SNAP_RADIUS} px from free space)")
    rows, cols = free_rows + r0, free_cols + c0
    best = np.lexsort((cols, rows, (rows - row) ** 2 + (cols - col) ** 2))[0]
    return int(rows[best]), int(cols[best])
