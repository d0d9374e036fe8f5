"""The per-city corner graph: which pixels and which other corners each convex corner sees.

Built once per layout (and car state) and shared by every Tx of the city:

- corner -> pixel pairs, as flat arrays grouped by corner (the per-Tx evaluation then
  reads one small direction table row per corner at a time), plus a by-pixel index: the
  pairs of a Tx's own pixel are the corners the Tx sees, so a Tx->corner leg and the
  reversed corner->receiver leg come from the same entry (reciprocal by construction);
- corner -> corner edges, symmetric: where the two sweeps disagree the exact symmetric
  segment test decides, and the car length of an edge is the mean of both sweeps.

Lengths are in metres, directions quantised in `rays.DIRECTION_BINS` per turn, car losses
in gray (`model.car_loss_gray`, applied per leg).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radiodiff.sim.corners import convex_corners
from radiodiff.sim.model import SimParams, car_loss_gray
from radiodiff.sim.rays import (
    DIRECTION_BINS,
    RayFan,
    car_lengths_to,
    cast,
    integrate_cars,
    padded_grids,
    ray_fan,
    segments_clear,
    visible,
)


@dataclass(frozen=True)
class CornerGraph:
    """Corners `[C, 2]` (row, col); pairs `[P]` grouped by corner; edges `[E]` grouped by source.

    Corner c owns `pair_*[corner_starts[c]:corner_starts[c + 1]]`; `pair_table` is
    `corner * DIRECTION_BINS + direction(corner -> pixel)`. The pairs of flat pixel q are
    `pixel_pairs[pixel_starts[q]:pixel_starts[q + 1]]`; the edges leaving corner c are
    `edge_*[edge_starts[c]:edge_starts[c + 1]]`. `pair_car`/`edge_car` (gray) are None in
    the static setting.
    """

    corners: np.ndarray
    corner_starts: np.ndarray
    pair_pixel: np.ndarray
    pair_corner: np.ndarray
    pair_length: np.ndarray
    pair_direction: np.ndarray
    pair_table: np.ndarray
    pair_car: np.ndarray | None
    pixel_starts: np.ndarray
    pixel_pairs: np.ndarray
    edge_starts: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_length: np.ndarray
    edge_direction: np.ndarray
    edge_car: np.ndarray | None

    def pairs_of(self, flat_pixel: int) -> np.ndarray:
        """Indices of the pairs whose pixel is `flat_pixel`: the corners that see it."""
        return self.pixel_pairs[self.pixel_starts[flat_pixel] : self.pixel_starts[flat_pixel + 1]]


def build_corner_graph(
    buildings: np.ndarray, cars: np.ndarray | None, *, pixel_size_m: float, params: SimParams
) -> CornerGraph:
    """Find the convex corners of `buildings` `[N, N]` bool and everything each of them sees."""
    size = buildings.shape[0]
    fan = ray_fan(size)
    blocked, car_grid = padded_grids(buildings, cars)
    corners = convex_corners(buildings)
    corner_flat = corners[:, 0] * size + corners[:, 1]
    sweeps = [_sweep_corner(fan, blocked, car_grid, buildings, row, col, corner_flat) for row, col in corners]
    pairs = _pairs(sweeps, size, pixel_size_m, params, cars is not None)
    edges = _edges(fan, buildings, corners, sweeps, pixel_size_m, params, cars is not None)
    return CornerGraph(corners, *pairs, *edges)


def _sweep_corner(fan: RayFan, blocked, car_grid, buildings, row, col, corner_flat):
    """One corner's view: seen pixels, their length (px), direction, car length (px), and the corners seen."""
    horizon = cast(fan, blocked, row, col)
    car_length = None if car_grid is None else integrate_cars(fan, car_grid, row, col, horizon)
    seen = visible(fan, horizon, row, col) & ~buildings
    seen[row, col] = False  # the corner's own pixel is reached by the leg that arrives there
    flat = np.flatnonzero(seen)
    radius = fan.window(fan.radius, row, col).ravel()
    direction = fan.window(fan.direction, row, col).ravel()
    with_cars = car_grid is not None
    cars_on_leg = car_lengths_to(fan, horizon, car_length, row, col, flat) if with_cars else None
    sees_corner = seen.ravel()[corner_flat]
    cars_to_corner = car_lengths_to(fan, horizon, car_length, row, col, corner_flat) if with_cars else None
    return flat, radius[flat], direction[flat], cars_on_leg, sees_corner, cars_to_corner


def _pairs(sweeps, size, pixel_size_m, params, with_cars):
    """Concatenate the corners' pixel lists (grouped by corner) and index them by pixel."""
    counts = np.array([len(s[0]) for s in sweeps], np.int64)
    corner_starts = np.r_[0, np.cumsum(counts)]
    pixel = _concat(sweeps, 0, np.int32)
    corner = np.repeat(np.arange(len(sweeps), dtype=np.int32), counts)
    length = _concat(sweeps, 1, np.float32) * np.float32(pixel_size_m)
    direction = _concat(sweeps, 2, np.int16)
    table = corner * DIRECTION_BINS + direction.astype(np.int32)
    car = car_loss_gray(_concat(sweeps, 3, np.float32) * pixel_size_m, params) if with_cars else None
    pixel_pairs = np.argsort(pixel, kind="stable").astype(np.int32)
    pixel_starts = np.searchsorted(pixel[pixel_pairs], np.arange(size * size + 1)).astype(np.int32)
    return corner_starts, pixel, corner, length, direction, table, car, pixel_starts, pixel_pairs


def _concat(sweeps, field, dtype):
    if not sweeps:
        return np.zeros(0, dtype)
    return np.concatenate([s[field] for s in sweeps]).astype(dtype)


def _edges(fan, buildings, corners, sweeps, pixel_size_m, params, with_cars):
    """Symmetric corner-corner edges, grouped by source."""
    count = len(corners)
    if count == 0:
        empty = np.zeros(0, np.int32)
        no_cars = np.zeros(0, np.float32) if with_cars else None
        return np.zeros(1, np.int64), empty, empty, np.zeros(0, np.float32), np.zeros(0, np.int16), no_cars
    sees = np.stack([s[4] for s in sweeps])
    np.fill_diagonal(sees, False)
    sees = sees & sees.T | _settle_disagreements(buildings, corners, sees)
    src, dst = np.nonzero(sees)  # row-major: grouped by source
    starts = np.searchsorted(src, np.arange(count + 1))
    offset = corners[dst] - corners[src]
    length = (np.hypot(offset[:, 0], offset[:, 1]) * pixel_size_m).astype(np.float32)
    direction = fan.direction[offset[:, 0] + fan.size - 1, offset[:, 1] + fan.size - 1]
    car = None
    if with_cars:
        cars = np.stack([s[5] for s in sweeps])
        car = car_loss_gray(0.5 * (cars[src, dst] + cars[dst, src]) * pixel_size_m, params)
    return starts, src.astype(np.int32), dst.astype(np.int32), length, direction, car


def _settle_disagreements(buildings, corners, sees):
    """`[C, C]` bool: pairs the two sweeps disagree on that the exact segment test finds clear."""
    first, second = np.nonzero(np.triu(sees != sees.T))
    settled = np.zeros_like(sees)
    for index in np.unique(first):
        mine = second[first == index]
        clear = segments_clear(buildings, tuple(corners[index]), corners[mine, 0], corners[mine, 1])
        settled[index, mine[clear]] = True
    return settled | settled.T
