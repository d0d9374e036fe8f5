"""Visibility from one point of a square grid by a polar ray sweep, plus an exact symmetric test.

A `RayFan` holds, once per map size, `n_rays` rays sampled every `STEP` pixels, stored as
flat offsets into a padded grid (the map in the middle of a 3N x 3N array, everything
outside the map blocked), so casting from any source is one `take` per stage with no
index arithmetic. Rays march in stages and drop out once they hit a building: in a dense
city most rays stop within a few tens of pixels.

A pixel is visible from the source when its distance is below the first hit of its ray.
Where the neighbouring rays disagree (shadow edges, grazing walls) `visible` re-tests the
pixel with `segments_clear`, a sampled segment test that orders the two end points
canonically and so gives the same answer from either end: visibility between a Tx and a
receiver is reciprocal by construction (up to exactly grazing lines, where the sweep from
one end can be sure while the other end's test finds a hundredth-of-a-pixel clip).

With cars, `integrate_cars` sums the (smoothed) car density along every ray.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

STEP = 0.5  # px between samples along a ray
RAYS_PER_PIXEL = 8  # rays per map side length: 2048 rays at 256 px, 0.8 px apart at 256 px range
DIRECTION_BINS = 512  # quantised directions per turn (0.7 deg); a power of two (wraps with `&`)
STAGES = (0, 32, 96, 224, 480)  # sample indices where the sweep drops rays that hit a building
SEGMENT_SAMPLES_PER_PX = 3.0
CAR_BLUR_PX = 1.0  # Gaussian sigma of the car density (px)


@dataclass(frozen=True)
class RayFan:
    """Ray offsets and per-offset lookup tables for an `[N, N]` map.

    `offsets [R, S]` int32: flat offsets into the padded `[3N, 3N]` grid, shifted to be >= 0;
    `radii [S]` px. For bilinear reads, `floor_offsets [R, S]` point at the pixel up-left of
    each sample and `fractions [2, R, S]` float32 hold its (row, col) position in that cell.
    Per pixel offset `(dy, dx)` in `[-(N-1), N-1]^2` (stored at
    `[dy + N - 1, dx + N - 1]`): `ray` (nearest ray index), `radius` (px, float32),
    `sample` (nearest sample index) and `direction` (quantised angle in `DIRECTION_BINS`
    per turn, antisymmetric: the direction of `-v` is that of `v` plus half a turn).
    """

    size: int
    offsets: np.ndarray
    floor_offsets: np.ndarray
    fractions: np.ndarray
    radii: np.ndarray
    ray: np.ndarray
    radius: np.ndarray
    sample: np.ndarray
    direction: np.ndarray

    @property
    def n_rays(self) -> int:
        return self.offsets.shape[0]

    def window(self, table: np.ndarray, row: int, col: int) -> np.ndarray:
        """The `[N, N]` view of an offset table for a source at (row, col)."""
        n = self.size
        return table[n - 1 - row : 2 * n - 1 - row, n - 1 - col : 2 * n - 1 - col]


@functools.lru_cache(maxsize=4)
def ray_fan(size: int) -> RayFan:
    """The (cached) ray fan of an `[size, size]` map."""
    n_rays = RAYS_PER_PIXEL * size
    radii = np.arange(int(np.ceil(size * np.sqrt(2) / STEP)) + 2) * STEP
    angles = np.arange(n_rays) * (2 * np.pi / n_rays)
    exact_y, exact_x = radii[None, :] * np.sin(angles[:, None]), radii[None, :] * np.cos(angles[:, None])
    offsets = _flat_offsets(np.rint(exact_y), np.rint(exact_x), size, size)
    floor_y, floor_x = np.floor(exact_y), np.floor(exact_x)
    floor_offsets = _flat_offsets(floor_y, floor_x, size, size - 1)
    fractions = np.stack([exact_y - floor_y, exact_x - floor_x]).astype(np.float32)
    oy, ox = np.mgrid[-(size - 1) : size, -(size - 1) : size]
    angle = np.arctan2(oy, ox)
    ray = (np.rint(angle * n_rays / (2 * np.pi)).astype(np.int64) % n_rays).astype(np.int32)
    radius = np.hypot(oy, ox)
    sample = np.rint(radius / STEP).astype(np.int32)
    return RayFan(
        size, offsets, floor_offsets, fractions, radii.astype(np.float32),
        ray, radius.astype(np.float32), sample, _directions(oy, ox),
    )


def _flat_offsets(dy: np.ndarray, dx: np.ndarray, size: int, upper: int) -> np.ndarray:
    """Flat int32 offsets into the padded `[3N, 3N]` grid, shifted to be >= 0.

    Clipped to `[-size, upper]`: a sample that far from any in-map source is off the map.
    """
    dy, dx = (np.clip(d, -size, upper).astype(np.int64) for d in (dy, dx))
    return (dy * 3 * size + dx + size * 3 * size + size).astype(np.int32)


def _directions(oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
    """Quantised directions, made exactly antisymmetric so that reversed legs turn alike."""
    half = DIRECTION_BINS // 2
    quantised = np.rint(np.arctan2(oy, ox) * DIRECTION_BINS / (2 * np.pi)).astype(np.int64) % DIRECTION_BINS
    flipped = quantised[::-1, ::-1]  # direction of the opposite offset
    upper = (oy > 0) | ((oy == 0) & (ox >= 0))
    return np.where(upper, quantised, (flipped + half) % DIRECTION_BINS).astype(np.int16)


def padded_grids(buildings: np.ndarray, cars: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The flat `[3N * 3N]` grids rays run on: blocked (building or off-map) bool, and car density or None.

    The car mask is smoothed by a Gaussian of `CAR_BLUR_PX` (area kept): a leg passing
    close beside a car is partly obstructed, as its Fresnel zone is, and the car length
    integrated from either end of a leg agrees to within a few centimetres instead of
    jumping by a whole sample.
    """
    n = buildings.shape[0]
    blocked = np.ones((3 * n, 3 * n), bool)
    blocked[n : 2 * n, n : 2 * n] = buildings
    if cars is None:
        return blocked.ravel(), None
    car_grid = np.zeros((3 * n, 3 * n), np.float32)
    density = (cars & ~buildings).astype(np.float32)
    car_grid[n : 2 * n, n : 2 * n] = ndimage.gaussian_filter(density, CAR_BLUR_PX, mode="constant")
    return blocked.ravel(), car_grid.ravel()


def cast(fan: RayFan, blocked: np.ndarray, row: int, col: int) -> np.ndarray:
    """Sweep all rays from (row, col) over the padded `blocked` grid; `[R]` first-hit distance (px)."""
    view = blocked[row * 3 * fan.size + col :]
    n_rays, n_samples = fan.offsets.shape
    horizon = np.full(n_rays, fan.radii[-1], np.float32)
    active = np.arange(n_rays)
    bounds = [b for b in STAGES if b < n_samples] + [n_samples]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        hits = view.take(fan.offsets[:, start:stop] if start == 0 else fan.offsets[active, start:stop])
        hit = hits.any(axis=1)
        horizon[active[hit]] = fan.radii[start + hits[hit].argmax(axis=1)]
        active = active[~hit]
        if len(active) == 0:
            break
    return horizon


def integrate_cars(fan: RayFan, cars: np.ndarray, row: int, col: int, reach: np.ndarray, *, bilinear: bool = False):
    """`[R, S]` float32 car length (px) along each ray from (row, col), up to each sample.

    Trapezoid rule (half weight at both ends) over the padded car density grid; filled up
    to distance `reach [R]` (px) on each ray, at least to the end of the stage that holds
    it. `bilinear` reads the density between pixels (four reads a sample) so that a leg's
    car length barely depends on which end the ray starts from.
    """
    view = cars[row * 3 * fan.size + col :]
    n_rays, n_samples = fan.offsets.shape
    last = np.rint(reach / STEP)
    car_length = np.empty((n_rays, n_samples), np.float32)
    state = (np.zeros(n_rays, np.float32), np.zeros(n_rays, np.float32))
    active = np.arange(n_rays)
    bounds = [b for b in STAGES if b < n_samples] + [n_samples]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        car = _bilinear(fan, view, active, start, stop) if bilinear else view.take(fan.offsets[active, start:stop])
        state = _accumulate_cars(car_length, car, active, start, stop, *state)
        going = last[active] >= stop
        active, state = active[going], (state[0][going], state[1][going])
        if len(active) == 0:
            break
    return car_length


def _bilinear(fan: RayFan, view: np.ndarray, active: np.ndarray, start: int, stop: int) -> np.ndarray:
    """`[len(active), stop - start]` values of `view` interpolated at the ray samples."""
    corner = fan.floor_offsets[active, start:stop]
    fy, fx = fan.fractions[:, active, start:stop]
    width = 3 * fan.size
    top = view.take(corner)
    top += fx * (view.take(corner + 1) - top)
    bottom = view.take(corner + width)
    bottom += fx * (view.take(corner + width + 1) - bottom)
    top += fy * (bottom - top)
    return top


def _accumulate_cars(out, car, active, start, stop, carried, first_car):
    """Fill `out[active, start:stop]` with trapezoid car length; return the running state.

    Only rays that meet a car in this stage need a running sum; the others stay level.
    """
    if start == 0:
        first_car = car[:, 0].copy()
    out[active, start:stop] = (carried - 0.5 * first_car)[:, None] * STEP
    meets = np.flatnonzero(car.any(axis=1))
    if len(meets):
        seen = car[meets]
        cumulative = np.cumsum(seen, axis=1)
        cumulative += carried[meets, None]
        out[active[meets], start:stop] = (cumulative - 0.5 * seen - 0.5 * first_car[meets, None]) * STEP
        carried = carried.copy()
        carried[meets] = cumulative[:, -1]
    return carried, first_car


def car_lengths_to(fan: RayFan, reach, car_length, row: int, col: int, flat: np.ndarray) -> np.ndarray:
    """Car length (px) from (row, col) to flat pixels `[n]`, from `integrate_cars` over `reach`.

    Read on each pixel's ray no further than the ray's reach: pixels that the exact test
    found visible past it take the value there.
    """
    ray = fan.window(fan.ray, row, col).ravel()[flat]
    sample = fan.window(fan.sample, row, col).ravel()[flat]
    last = np.rint(reach[ray] / STEP).astype(np.int32)
    return car_length[ray, np.minimum(sample, last)]


def visible(fan: RayFan, horizon: np.ndarray, row: int, col: int, *, blocked: np.ndarray | None = None) -> np.ndarray:
    """`[N, N]` bool: pixels seen from (row, col) given the ray horizon `[R]`.

    With `blocked` (`[N, N]` bool buildings), pixels whose neighbouring rays disagree are
    re-tested with the exact symmetric `segments_clear`.
    """
    ray = fan.window(fan.ray, row, col)
    radius = fan.window(fan.radius, row, col)
    seen = radius < horizon[ray]
    if blocked is None:
        return seen
    n_rays = fan.n_rays
    before = radius < horizon[(ray - 1) % n_rays]
    after = radius < horizon[(ray + 1) % n_rays]
    rows, cols = np.nonzero(((seen != before) | (seen != after)) & ~blocked)
    if len(rows):
        seen[rows, cols] = segments_clear(blocked, (row, col), rows, cols)
    return seen


def segments_clear(blocked: np.ndarray, source: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`[n]` bool: whether the straight segment from `source` to each pixel avoids `blocked`.

    Samples every 1/3 px (pixel of each sample by rounding). The end points are put in
    a canonical order first, so the same points are sampled whichever end is the source.
    """
    n = len(rows)
    if n == 0:
        return np.zeros(0, bool)
    ends = np.stack([np.full(n, source[0]), np.full(n, source[1]), rows, cols], axis=1).astype(np.float64)
    swap = (ends[:, 0] > ends[:, 2]) | ((ends[:, 0] == ends[:, 2]) & (ends[:, 1] > ends[:, 3]))
    ends[swap] = ends[swap][:, [2, 3, 0, 1]]
    steps = np.maximum(np.ceil(np.hypot(ends[:, 2] - ends[:, 0], ends[:, 3] - ends[:, 1]) * SEGMENT_SAMPLES_PER_PX), 1)
    counts = steps.astype(np.int64) + 1
    owner = np.repeat(np.arange(n), counts)
    starts = np.cumsum(counts) - counts
    fraction = (np.arange(counts.sum()) - starts[owner]) / steps[owner]
    ys = np.rint(ends[owner, 0] + fraction * (ends[owner, 2] - ends[owner, 0])).astype(np.int64)
    xs = np.rint(ends[owner, 1] + fraction * (ends[owner, 3] - ends[owner, 1])).astype(np.int64)
    return ~np.logical_or.reduceat(blocked[ys, xs], starts)
