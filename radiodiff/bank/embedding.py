"""The static-layout embedding that lets a new city layout reuse a similar scene's midpoint."""

from __future__ import annotations

import numpy as np

GRID = 8  # the layout is summarised on a GRID x GRID grid of cells
EMBEDDING_DIM = GRID * GRID


def layout_embedding(buildings) -> np.ndarray:
    """Building-occupancy fraction of each cell of an 8x8 grid over the layout.

    `buildings` is `[H, W]` in {0, 1} (1 = building; numpy or torch), with H and W multiples
    of 8. Returns float32 `[64]` in [0, 1], row-major over the grid: entry `8 * i + j` is the
    area fraction of cell (i, j) covered by buildings. Deterministic; no learned parameters.
    """
    if hasattr(buildings, "detach"):  # a torch tensor; torch is not imported just for this check
        buildings = buildings.detach().cpu().numpy()
    layout = np.asarray(buildings)
    if layout.ndim != 2 or layout.shape[0] % GRID or layout.shape[1] % GRID or 0 in layout.shape:
        raise ValueError(f"buildings must be [H, W] with H and W positive multiples of {GRID}, got {layout.shape}")
    if not np.isin(layout, (0, 1)).all():
        raise ValueError("buildings must hold only 0 (free) and 1 (building)")
    height, width = layout.shape
    cells = layout.astype(np.float64).reshape(GRID, height // GRID, GRID, width // GRID)
    return cells.mean(axis=(1, 3)).reshape(EMBEDDING_DIM).astype(np.float32)
