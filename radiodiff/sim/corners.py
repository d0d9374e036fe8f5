"""Convex building corners: the points where the dominant paths turn.

Real layouts are rasterised polygons: every step of a slanted wall looks like a convex
corner at pixel level. A candidate is therefore kept only when the building occupies
little of an 8 x 8 px window around the corner point (a right-angled corner fills about
a quarter, a straight or staircase wall half), and candidates closer than `MERGE_RADIUS`
are merged, keeping the sharpest. Past the map edge the layout is taken to continue as it
is at the edge. On RadioMapSeer layouts that leaves one point per real
corner: 200 to 550 per map, about four per building.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

WINDOW_HALF = 4  # px: the occupancy window spans 2 * WINDOW_HALF around the corner point
MAX_OCCUPANCY = 0.42  # between an obtuse 135 deg corner (0.375) and a straight wall (0.5)
MERGE_RADIUS = 3.0  # px


def convex_corners(buildings: np.ndarray) -> np.ndarray:
    """`[C, 2]` int (row, col): the free pixel diagonally outside each convex building corner.

    Sorted by (row, col), so the result depends only on the layout.
    """
    rows, cols, occupancy = _candidates(buildings)
    keep = occupancy < MAX_OCCUPANCY
    rows, cols, occupancy = rows[keep], cols[keep], occupancy[keep]
    order = np.lexsort((cols, rows, occupancy))  # sharpest first, ties by position
    points = np.stack([rows[order], cols[order]], axis=1)
    kept = _suppress_neighbours(points)
    corners = points[kept]
    return corners[np.lexsort((corners[:, 1], corners[:, 0]))]


def _candidates(buildings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free pixels touching a building only at a corner point, with the window occupancy."""
    height, width = buildings.shape
    padded = np.pad(buildings, 1, constant_values=False)
    # the occupancy window sees the layout continued past the map edge, as walls run on there
    extended = np.pad(buildings, WINDOW_HALF, mode="edge")
    integral = np.zeros((height + 2 * WINDOW_HALF + 1, width + 2 * WINDOW_HALF + 1))
    integral[1:, 1:] = np.cumsum(np.cumsum(extended, axis=0), axis=1)
    found = []
    for dy, dx in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        diagonal = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
        side_row = padded[1 + dy : 1 + dy + height, 1 : 1 + width]
        side_col = padded[1 : 1 + height, 1 + dx : 1 + dx + width]
        rows, cols = np.nonzero(~buildings & diagonal & ~side_row & ~side_col)
        # grid vertex shared with the diagonal building pixel (vertex (v, u) = top-left of pixel (v, u));
        # in the extended integral image the window [v - h, v + h) starts at index v
        vy, vx = rows + (dy + 1) // 2, cols + (dx + 1) // 2
        span = 2 * WINDOW_HALF
        filled = integral[vy + span, vx + span] - integral[vy, vx + span] - integral[vy + span, vx] + integral[vy, vx]
        found.append((rows, cols, filled / span**2))
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _suppress_neighbours(points: np.ndarray) -> np.ndarray:
    """Indices of points kept greedily in the given order, none within `MERGE_RADIUS` of another."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    neighbours = cKDTree(points).query_ball_point(points, MERGE_RADIUS)
    suppressed = np.zeros(len(points), bool)
    kept = []
    for index in range(len(points)):
        if not suppressed[index]:
            kept.append(index)
            suppressed[neighbours[index]] = True
    return np.asarray(kept, np.int64)
