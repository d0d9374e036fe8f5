"""What every process on continuous time t in [0, 1] shares (t = 1 pure noise, t = 0 clean):
reading a config's t_mid, the evenly spaced grid, the grid check, the network's time input, the
fingerprint, and no slower reference sampler. The decoupled (kc) and flow-matching processes
inherit it and add their own path, step and loss."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the protocol module imports this one
    from radiodiff.diffusion.process import DiffusionProcess

TIME_EMBEDDING_SCALE = 1000.0  # t in (0, 1] times this spans the same range as discrete steps


def decoupled_times(num_steps: int, t_start: float = 1.0, t_end: float = 0.0) -> tuple[float, ...]:
    """num_steps + 1 evenly spaced descending times from t_start to t_end, both exact.

    The default grid (1, 1 - 1/N, ..., 1/N, 0) is RadioDiff's uniform step s = 1/N. A
    midpoint split is two grids, (N1, 1, t_mid) then (N2, t_mid), or a cut of one grid.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 <= t_end < t_start <= 1.0:
        raise ValueError(f"need 0 <= t_end ({t_end}) < t_start ({t_start}) <= 1")
    # Weighted ends (weights 1 and 0 exactly) instead of start - i * step: both ends come out exact.
    times = tuple(t_start * ((num_steps - i) / num_steps) + t_end * (i / num_steps) for i in range(num_steps + 1))
    if any(later >= earlier for earlier, later in zip(times, times[1:])):
        raise ValueError(f"{num_steps} steps do not fit between {t_start} and {t_end}")
    return times


def check_times(times: Sequence[float] | torch.Tensor) -> tuple[float, ...]:
    """A time grid as floats, checked to descend strictly within [0, 1]."""
    grid = tuple(float(t) for t in times)
    if not grid or grid[0] > 1.0 or grid[-1] < 0.0:
        raise ValueError(f"times must be a non-empty sequence in [0, 1], got {grid}")
    if any(later >= earlier for earlier, later in zip(grid, grid[1:])):
        raise ValueError(f"times must be strictly descending, got {grid}")
    return grid


class ContinuousTime:
    """Methods of the process contract that depend only on continuous time; the subclass (a
    frozen dataclass) provides `num_train_steps` (T, the unit of config times) and `spec()`."""

    num_train_steps: int
    start_time = 1.0
    end_time = 0.0
    time_embedding_scale = TIME_EMBEDDING_SCALE
    calls_per_step = 1

    def second_order(self) -> DiffusionProcess | None:
        """No second-order variant (flow matching overrides it)."""
        return None

    def config_time(self, steps: int) -> float:
        """A config's time in steps of T as t = steps / T, and 1 for T-1 (pure noise in both)."""
        if not 0 < steps <= self.num_train_steps - 1:
            raise ValueError(f"t_mid must be in [1, {self.num_train_steps - 1}], got {steps}")
        return 1.0 if steps == self.num_train_steps - 1 else steps / self.num_train_steps

    def timesteps(self, num_steps: int, start: float | None = None, end: float | None = None) -> tuple[float, ...]:
        """num_steps + 1 evenly spaced times from `start` (default 1) to `end` (default 0, clean)."""
        return decoupled_times(num_steps, self.start_time if start is None else start,
                               self.end_time if end is None else end)

    def check_times(self, times: Sequence[float] | torch.Tensor) -> tuple[float, ...]:
        """A grid as floats, strictly descending within [0, 1]."""
        return check_times(times)

    def model_time(self, t: float, like: torch.Tensor) -> torch.Tensor:
        """The network's time input `[B]` (float64 for float64 latents, else float32)."""
        return torch.full((like.shape[0],), t, dtype=torch.promote_types(like.dtype, torch.float32), device=like.device)

    def spec(self) -> dict:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """16 hex digits of `spec`."""
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    def full_trajectory(self) -> None:
        """No longer reference sampler than its own few-step one: None."""
        return None
