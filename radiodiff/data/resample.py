"""Block downsampling of 256 m maps to the model's resolution, and the way back for outputs."""

from __future__ import annotations

import numpy as np


def _blocks(array: np.ndarray, factor: int) -> np.ndarray:
    """View `[..., H, W]` as `[..., H/f, W/f, f, f]` blocks."""
    *lead, height, width = array.shape
    if height % factor or width % factor:
        raise ValueError(f"factor {factor} does not divide the map size {height}x{width}")
    shaped = array.reshape(*lead, height // factor, factor, width // factor, factor)
    return np.moveaxis(shaped, -3, -2)


def majority(mask: np.ndarray, factor: int) -> np.ndarray:
    """A block is set when more than half of its pixels are: `[..., H, W]` -> `[..., H/f, W/f]` bool."""
    return _blocks(mask.astype(np.float32), factor).mean(axis=(-2, -1)) > 0.5


def coverage(mask: np.ndarray, factor: int) -> np.ndarray:
    """The share of each block that is set: `[..., H, W]` -> `[..., H/f, W/f]` float32 in [0, 1].

    For the cars: a car is 2 x 4-5 m, so a majority vote over 4 m blocks keeps almost none of
    them (4% of one map's car pixels) while the gain still shows their shadow."""
    return _blocks(mask.astype(np.float32), factor).mean(axis=(-2, -1))


def downsample_gain(gain: np.ndarray, buildings: np.ndarray, factor: int) -> np.ndarray:
    """Area-average a gain map over the free pixels of each block.

    gain: `[..., H, W]` in [0, 1]; buildings: `[H, W]` bool at full resolution.
    Returns `[..., H/f, W/f]` float32, 0 in blocks that are mostly building (the data
    contract: gain is 0 inside buildings). Averaging over free pixels only keeps street
    pixels next to a wall from being darkened by the wall's zeros.
    """
    free = (~buildings).astype(np.float32)
    summed = _blocks(gain * free, factor).sum(axis=(-2, -1))
    count = _blocks(free, factor).sum(axis=(-2, -1))
    mean = summed / np.maximum(count, 1.0)
    return np.where(majority(buildings, factor), 0.0, mean).astype(np.float32)


def upsample_gain(gain: np.ndarray, buildings: np.ndarray) -> np.ndarray:
    """A model-grid gain map back on its layout's grid: `[h, w]` -> `[H, W]` float32 in [0, 1],
    exactly 0 on the pixels of `buildings` (`[H, W]` bool, H a multiple of h).

    Bilinear between the centres of the model's pixels (a pixel of 4 m covers 4 x 4 source
    pixels, its value sits at their centre), weighted by the model grid's free pixels so that a
    street next to a wall is not darkened by the wall's zeros (the inverse of `downsample_gain`'s
    free-pixel average). Where all four neighbours are buildings, the nearest model pixel's value.
    """
    height, width = buildings.shape
    factor = height // gain.shape[0]
    if height % gain.shape[0] or width != gain.shape[1] * factor:
        raise ValueError(f"a {gain.shape} map does not tile a {buildings.shape} layout")
    free_low = ~majority(buildings, factor)
    rows = _bilinear_axis(height, gain.shape[0])
    cols = _bilinear_axis(width, gain.shape[1])
    weighted = _interpolate(gain.astype(np.float64) * free_low, rows, cols)
    weight = _interpolate(free_low.astype(np.float64), rows, cols)
    nearest = np.repeat(np.repeat(gain, factor, axis=0), factor, axis=1)
    full = np.where(weight > 1e-9, weighted / np.maximum(weight, 1e-9), nearest)
    full[buildings] = 0.0
    return np.clip(full, 0.0, 1.0).astype(np.float32)


def _bilinear_axis(size: int, low: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `size` output positions: the two model pixels around it and the second's weight."""
    position = np.clip((np.arange(size) + 0.5) * low / size - 0.5, 0.0, low - 1.0)
    first = np.floor(position).astype(np.int64)
    second = np.minimum(first + 1, low - 1)
    return first, second, position - first


def _interpolate(values: np.ndarray, rows, cols) -> np.ndarray:
    """Separable bilinear interpolation of `[h, w]` at the (row, col) positions of `_bilinear_axis`."""
    r0, r1, rw = rows
    c0, c1, cw = cols
    along_rows = values[r0] * (1.0 - rw)[:, None] + values[r1] * rw[:, None]
    return along_rows[:, c0] * (1.0 - cw)[None, :] + along_rows[:, c1] * cw[None, :]
