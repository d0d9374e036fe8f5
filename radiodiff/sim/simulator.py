"""The public simulator: one city layout, any number of Tx positions.

`CitySimulator` does the per-city work once (convex corners, what each corner sees, the
corner graph; see `graph.py`); each Tx then costs one ray sweep for its line of sight
(`rays.py`, with shallow clips of staircase walls in `grazing.py`), a corner search
(`labels.py`) and one pass over the corner -> pixel pairs (`paths.py`). The laws, the car
model and the gray <-> dB mapping are in `model.py`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from radiodiff.errors import UserError
from radiodiff.sim.graph import CornerGraph, build_corner_graph
from radiodiff.sim.model import SimParams, car_loss_gray, gray_to_db, los_gray
from radiodiff.sim.grazing import clip_values, past_clips
from radiodiff.sim.labels import corner_labels
from radiodiff.sim.masks import resolve_tx, validate_mask
from radiodiff.sim.paths import corner_field
from radiodiff.sim.rays import car_lengths_to, cast, integrate_cars, padded_grids, ray_fan, visible


class CitySimulator:
    """Dominant-path radio maps of one square layout.

    `buildings` `[N, N]` (bool, 0/1 or 0/255), `cars` the same shape or None (static
    setting: no cars); `pixel_size_m` is the side of one pixel (1 m for RadioMapSeer's
    256 x 256 maps). Raises `UserError` for a layout that is not square and binary.
    """

    def __init__(
        self,
        buildings: np.ndarray,
        *,
        cars: np.ndarray | None = None,
        params: SimParams = SimParams(),
        pixel_size_m: float = 1.0,
    ):
        self.buildings = validate_mask(buildings, name="buildings", size=None)
        size = self.buildings.shape[0]
        if self.buildings.shape != (size, size):
            raise UserError(f"buildings: layout has shape {self.buildings.shape}, expected a square map")
        self.cars = None if cars is None else validate_mask(cars, name="cars", size=size)
        if not pixel_size_m > 0:
            raise UserError(f"pixel size must be positive, got {pixel_size_m}")
        self.params = params
        self.pixel_size_m = float(pixel_size_m)
        self._fan = ray_fan(size)
        self._blocked, self._car_grid = padded_grids(self.buildings, self.cars)
        self.graph: CornerGraph = build_corner_graph(
            self.buildings, self.cars, pixel_size_m=self.pixel_size_m, params=params
        )
        # a clip next to a graph corner is that corner's shadow edge: the graph handles it
        self._near_corner = np.zeros_like(self.buildings)
        self._near_corner[tuple(self.graph.corners.T)] = True
        self._near_corner = ndimage.binary_dilation(self._near_corner, np.ones((5, 5), bool))

    @property
    def size(self) -> int:
        return self.buildings.shape[0]

    @property
    def corner_count(self) -> int:
        return len(self.graph.corners)

    def gain_gray(self, tx_row: int, tx_col: int) -> np.ndarray:
        """`[N, N]` uint8 gray levels (RadioMapSeer convention): 0 inside buildings and below -147 dB."""
        gray = self.gray_float(tx_row, tx_col)
        return np.clip(np.rint(np.nan_to_num(gray, nan=0.0, neginf=0.0)), 0, 255).astype(np.uint8)

    def gain_db(self, tx_row: int, tx_col: int) -> np.ndarray:
        """`[N, N]` float32 path gain in dB, not truncated at -147 dB.

        NaN inside buildings; -inf where no path arrives (paths are followed while they stay
        above gray -30, about -159 dB, so below that a pixel may also read -inf).
        """
        return gray_to_db(self.gray_float(tx_row, tx_col))

    def gray_float(self, tx_row: int, tx_col: int) -> np.ndarray:
        """`[N, N]` float32 gray levels before rounding and clipping (NaN inside buildings).

        A Tx on a building edge radiates from the nearest free pixel (`layout.resolve_tx`).
        """
        row, col = resolve_tx(self.buildings, int(tx_row), int(tx_col))
        size, near_m = self.size, 0.5 * self.pixel_size_m
        field = self._line_of_sight(row, col, near_m)
        labels = corner_labels(self.graph, row * size + col, self.params, near_m)
        np.maximum(field, corner_field(self.graph, labels, size, self.params, near_m), out=field)
        field = field.reshape(size, size)
        field[self.buildings] = np.nan
        return field

    def _line_of_sight(self, row: int, col: int, near_m: float) -> np.ndarray:
        """`[N*N]` float32: the LOS law where the Tx is seen, the clip law (`grazing.py`) behind
        shallow clips, minus car loss; -inf elsewhere."""
        fan = self._fan
        horizon = cast(fan, self._blocked, row, col)
        seen_map = visible(fan, horizon, row, col, blocked=self.buildings) & ~self.buildings
        reach, clipped = past_clips(fan, self._blocked, row, col, horizon)
        ray, radius = fan.window(fan.ray, row, col), fan.window(fan.radius, row, col)
        seen = np.flatnonzero(seen_map)
        grazed = np.flatnonzero(~seen_map & ~self.buildings & (radius < reach[ray]))
        clip = clipped[ray.ravel()[grazed]]
        away = (clip[:, 0] >= 0) & ~self._near_corner[clip[:, 0], clip[:, 1]]
        grazed, clip = grazed[away], clip[away]
        field = np.full(self.size * self.size, -np.inf, np.float32)
        field[seen] = los_gray(radius.ravel()[seen] * np.float32(self.pixel_size_m), self.params, near_m)
        targets = np.stack(np.divmod(grazed, self.size), axis=1)
        field[grazed] = clip_values(self.buildings, (row, col), targets, clip, params=self.params,
                                    pixel_size_m=self.pixel_size_m)
        if self._car_grid is not None:
            car_length = integrate_cars(fan, self._car_grid, row, col, reach, bilinear=True)
            lit = np.concatenate([seen, grazed])
            car_m = car_lengths_to(fan, reach, car_length, row, col, lit) * self.pixel_size_m
            field[lit] -= car_loss_gray(car_m, self.params)
        return field


def simulate_map(scene, tx_ids, *, with_cars: bool, params: SimParams = SimParams()) -> np.ndarray:
    """`[K, 256, 256]` uint8 gray maps of a RadioMapSeer `Scene` for Tx ids `tx_ids` (static or with cars)."""
    simulator = CitySimulator(scene.buildings, cars=scene.cars if with_cars else None, params=params)
    if len(tx_ids) == 0:
        return np.zeros((0, *scene.buildings.shape), np.uint8)
    return np.stack([simulator.gain_gray(*scene.tx(int(k))) for k in tx_ids]).astype(np.uint8)
