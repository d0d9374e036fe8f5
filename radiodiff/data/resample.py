"""Block downsampling of 256 m maps to the model's resolution."""

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
