"""Shallow shadows: a ray that only clips the corner of one building pixel.

Real layouts are rasterised polygons, so a slanted wall is a staircase of one-pixel
steps, and those steps are not in the corner graph (`corners.py` drops them). Without
more, a line of sight that clips a step by a hair would flip from the LOS law to a path
around some far corner, tens of gray lower, and the two ends of the line, testing it
with rays of slightly different phase, could disagree. So a ray whose first hit is
shallow (free space again within `SHALLOW_PX`) marches on to its next hit, and the pixels
between the two hits whose straight line cuts the clipped pixel by at most
`CLIP_DEPTH_PX` take the path that bends around its vertex: the soft-zone law of
`model.py` makes that equal to the LOS value for a hair-thin clip and fall smoothly as the
cut deepens. The vertex and the cut depend only on the straight line between the two
ends, so both ends find the same path.
"""

from __future__ import annotations

import numpy as np

from radiodiff.sim.model import SimParams, path_gray, turn_loss
from radiodiff.sim.rays import SEGMENT_SAMPLES_PER_PX, STEP, RayFan

SHALLOW_PX = 1.5  # a first hit counts as a clip when the ray is in free space again this far on
MARCH_SAMPLES = 64  # samples per step of the march past a clip
CLIP_DEPTH_PX = 0.3  # deepest cut into the clipped pixel that still counts as grazing
CHECK_SAMPLES = 6  # line samples each side of the clip that must meet no other building pixel


def past_clips(fan: RayFan, blocked: np.ndarray, row: int, col: int, horizon: np.ndarray):
    """For rays whose first hit is a clip: `[R]` second-hit distance (px) and the clipped pixel.

    `blocked` is the flat padded grid of `rays.padded_grids`. Returns `second` (equal to
    `horizon` on other rays) and `clipped [R, 2]` (row, col) of the first-hit pixel (-1 on
    other rays).
    """
    size, n_samples = fan.size, fan.offsets.shape[1]
    view = blocked[row * 3 * size + col :]
    first = np.rint(horizon / STEP).astype(np.int64)
    after = np.minimum(first + int(round(SHALLOW_PX / STEP)), n_samples - 1)
    rays = np.arange(fan.n_rays)
    clip = ~view.take(fan.offsets[rays, after]) & (after < n_samples - 1)
    second, clipped = horizon.copy(), np.full((fan.n_rays, 2), -1, np.int64)
    offset = fan.offsets[rays[clip], first[clip]].astype(np.int64) - (size * 3 * size + size)
    dy = np.floor_divide(offset + size, 3 * size)  # |dx| <= size, so dy is the nearest multiple
    clipped[clip] = np.stack([row + dy, col + offset - dy * 3 * size], axis=1)
    active, start = rays[clip], after[clip]
    while len(active):
        index = np.minimum(start[:, None] + np.arange(MARCH_SAMPLES)[None, :], n_samples - 1)
        hits = view.take(fan.offsets[active[:, None], index])
        hit = hits.any(axis=1)
        second[active[hit]] = fan.radii[index[hit, hits[hit].argmax(axis=1)]]
        active, start = active[~hit], start[~hit] + MARCH_SAMPLES
    return second, clipped


def clip_values(
    blocked: np.ndarray, source: tuple[int, int], targets: np.ndarray, clipped: np.ndarray, *,
    params: SimParams, pixel_size_m: float,
) -> np.ndarray:
    """Gray `[n]` of the paths from `source` to `targets [n, 2]` (row, col) that bend around
    the vertex of pixel `clipped [n, 2]` nearest to the straight line (no car loss).

    -inf where that vertex lies more than `CLIP_DEPTH_PX` off the line or where the line
    also cuts another building pixel near the clip (`blocked` `[N, N]` bool): a deeper cut
    is a real shadow, left to the corner graph.
    """
    source = np.asarray(source, np.float64)
    targets = np.asarray(targets, np.float64)
    line = targets - source
    vertices = clipped[:, None, :] + _VERTEX_OFFSETS[None]  # [n, 4, 2]
    # |cross product| / length: the same from either end, exactly (half-integer coordinates)
    cross = line[:, None, 0] * (vertices[..., 1] - source[1]) - line[:, None, 1] * (vertices[..., 0] - source[0])
    off_line = np.abs(cross) / np.hypot(line[:, 0], line[:, 1])[:, None]
    nearest = off_line.argmin(axis=1)
    vertex = vertices[np.arange(len(targets)), nearest]
    first, last = vertex - source, targets - vertex
    cross = first[:, 0] * last[:, 1] - first[:, 1] * last[:, 0]
    turn = np.degrees(np.abs(np.arctan2(cross, (first * last).sum(axis=1)))).astype(np.float32)
    length = (np.hypot(first[:, 0], first[:, 1]) + np.hypot(last[:, 0], last[:, 1])) * pixel_size_m
    length = length.astype(np.float32)
    value = path_gray(length, turn, turn_loss(turn, params), 0.0, params, 0.5 * pixel_size_m)
    deep = off_line[np.arange(len(targets)), nearest] > CLIP_DEPTH_PX
    value[deep | ~_only_clip(blocked, source, targets, vertex, clipped)] = -np.inf
    return value


def _only_clip(blocked: np.ndarray, source, targets, vertex, clipped) -> np.ndarray:
    """`[n]` bool: near the vertex, the straight line meets no building pixel but the clipped one.

    Samples as `rays.segments_clear` does (ends in canonical order, every 1/3 px), so both
    ends of a line look at the same points.
    """
    start = np.broadcast_to(source, targets.shape)
    swap = (start[:, 0] > targets[:, 0]) | ((start[:, 0] == targets[:, 0]) & (start[:, 1] > targets[:, 1]))
    first, last = np.where(swap[:, None], targets, start), np.where(swap[:, None], start, targets)
    line = last - first
    steps = np.maximum(np.ceil(np.hypot(line[:, 0], line[:, 1]) * SEGMENT_SAMPLES_PER_PX), 1)
    at = ((vertex - first) * line).sum(axis=1) / np.maximum((line * line).sum(axis=1), 1e-9)
    window = np.arange(-CHECK_SAMPLES, CHECK_SAMPLES + 1)[None, :]
    index = np.clip(np.floor(at * steps)[:, None] + window, 0, steps[:, None])
    points = first[:, None, :] + (index / steps[:, None])[..., None] * line[:, None, :]
    rows, cols = np.rint(points[..., 0]).astype(np.int64), np.rint(points[..., 1]).astype(np.int64)
    other = blocked[rows, cols] & ((rows != clipped[:, :1]) | (cols != clipped[:, 1:]))
    return ~other.any(axis=1)


_VERTEX_OFFSETS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
