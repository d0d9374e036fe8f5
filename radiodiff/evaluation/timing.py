"""Wall-clock timing of methods side by side: interleaved rounds, medians (a shared, noisy machine)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np


def time_interleaved(jobs: Mapping[str, Callable[[], object]], repeats: int,
                     counts: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """Run every job once per round, `repeats` rounds; each job handles `counts[name]` maps.

    Returns per job the median, min and max milliseconds per map over the rounds. Interleaving
    means a slow spell of the machine hits every method, not just the one running at the time.
    """
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            started = time.perf_counter()
            job()
            samples[name].append((time.perf_counter() - started) * 1e3 / counts[name])
    return {name: {"ms_median": float(np.median(v)), "ms_min": float(np.min(v)), "ms_max": float(np.max(v))}
            for name, v in samples.items()}
