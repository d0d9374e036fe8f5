"""RadioUNet's split of RadioMapSeer map ids into train / val / test."""

from __future__ import annotations

import numpy as np

from radiodiff.options import SPLITS

_SPLIT_SIZES = {"train": 501, "val": 100, "test": 99}


def radiounet_split(seed: int = 42) -> dict[str, np.ndarray]:
    """Map ids per split, in RadioUNet's order: ids 1..700 shuffled with numpy's legacy
    seed 42; the first 501 train, the next 100 validate, the last 99 test. Map 0 is never used.
    """
    order = np.arange(700, dtype=np.int64)
    np.random.RandomState(seed).shuffle(order)
    order += 1
    bounds = np.cumsum([0, *_SPLIT_SIZES.values()])
    return {name: order[bounds[i] : bounds[i + 1]] for i, name in enumerate(SPLITS)}
