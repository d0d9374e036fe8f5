"""Mean and 95% interval over repeated seeds, and losses relative to a reference method."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the two-sided 95% Student-t interval of the mean); 0 width for one
    value or identical values (a deterministic method)."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2 or np.all(array == array[0]):
        return mean, 0.0
    half = stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / np.sqrt(len(array))
    return mean, float(half)


def relative_loss(method: Sequence[float], reference: Sequence[float], *, higher_is_better: bool) -> tuple[float, float]:
    """Accuracy loss of `method` against `reference`, paired by seed, as a fraction of the
    reference: (mean, 95% half-width). Positive = worse than the reference."""
    m, r = np.asarray(method, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    loss = (r - m) / r if higher_is_better else (m - r) / r
    return interval(loss)
