"""Noise schedules: betas and cumulative alphas as float64 numpy arrays."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import torch

from radiodiff.options import ScheduleKind


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linear schedule [num_steps] float64 from beta_start to beta_end."""
    _check_steps(num_steps)
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Improved-DDPM's cosine schedule [num_steps] float64.

    alpha_bar(u) = cos^2(pi/2 * (u + s) / (1 + s)) for u in [0, 1]; beta_t =
    1 - alpha_bar(t+1) / alpha_bar(t), capped at max_beta because the last ratio goes to 0.
    """
    _check_steps(num_steps)
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    alpha_bar = np.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


def _check_steps(num_steps: int) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete schedule over T steps, indices t = 0 .. T-1.

    betas [T] and alphas_cumprod [T] (alpha_bar_t = prod_{s<=t} (1 - beta_s)) are read-only
    float64 numpy arrays; coefficients are formed in float64 and only then cast to the
    dtype of the tensors they multiply. Build one with `make_schedule` or `from_betas`.
    """

    betas: np.ndarray
    alphas_cumprod: np.ndarray

    def __post_init__(self) -> None:
        for name in ("betas", "alphas_cumprod"):
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        if self.betas.ndim != 1 or self.betas.shape != self.alphas_cumprod.shape:
            raise ValueError("betas and alphas_cumprod must be 1-D arrays of equal length")
        if not np.all((self.betas > 0) & (self.betas < 1)):
            raise ValueError("every beta must lie in (0, 1)")

    @classmethod
    def from_betas(cls, betas: np.ndarray) -> NoiseSchedule:
        """The schedule whose alphas_cumprod is the running product of 1 - betas."""
        betas = np.asarray(betas, dtype=np.float64)
        return cls(betas=betas, alphas_cumprod=np.cumprod(1.0 - betas))

    @property
    def num_steps(self) -> int:
        """T, the number of training steps."""
        return int(self.betas.shape[0])

    def alphas_cumprod_at(self, t: int | np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """alpha_bar_t as float64 (shape of t); t = -1 means "before step 0", alpha_bar = 1.

        An int or array gives numpy; a tensor gives a tensor on its device, gathered from a
        table cached there once (no copy to the host and back, so no device sync per step).
        """
        if isinstance(t, torch.Tensor):
            if t.device.type == "cpu":  # checking a device tensor's range would sync; CUDA asserts itself
                self._check_range(t.numpy() if not t.requires_grad else t.detach().numpy())
            return self._table(t.device)[t.long() + 1]
        steps = np.asarray(t, dtype=np.int64)
        self._check_range(steps)
        return np.where(steps >= 0, self.alphas_cumprod[np.clip(steps, 0, None)], 1.0)

    def _check_range(self, steps: np.ndarray) -> None:
        if np.any(steps < -1) or np.any(steps >= self.num_steps):
            raise IndexError(f"timestep out of range [-1, {self.num_steps - 1}]: {steps}")

    def _table(self, device: torch.device) -> torch.Tensor:
        """[1, alpha_bar_0, ..., alpha_bar_{T-1}] float64 on `device` (index t + 1), made once per device."""
        tables = self.__dict__.setdefault("_tables", {})
        if device not in tables:
            tables[device] = torch.from_numpy(np.concatenate([[1.0], self.alphas_cumprod])).to(device)
        return tables[device]


def make_schedule(kind: ScheduleKind, num_steps: int) -> NoiseSchedule:
    """The schedule of `kind` over `num_steps` steps with its default parameters."""
    betas = linear_betas(num_steps) if kind is ScheduleKind.LINEAR else cosine_betas(num_steps)
    return NoiseSchedule.from_betas(betas)


def schedule_fingerprint(schedule: NoiseSchedule) -> str:
    """A 16-hex-digit SHA-256 of the little-endian float64 arrays; keys the midpoint bank."""
    digest = hashlib.sha256()
    for array in (schedule.betas, schedule.alphas_cumprod):
        digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    return digest.hexdigest()[:16]


def as_coefficient(values: float | np.ndarray | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """float64 coefficients -> a factor for tensors like `like`: one value (a sampler step's)
    stays a Python float, rounded to like's dtype by the multiplication itself (no host-to-device
    copy, which would sync a GPU every step); per-sample values `[B]` (numpy or a tensor)
    become a tensor on like's device and dtype, shaped `[B, 1, ...]`."""
    if isinstance(values, torch.Tensor):
        tensor = values
    else:
        array = np.asarray(values, dtype=np.float64)
        if array.ndim == 0:
            return float(array)
        tensor = torch.from_numpy(array)
    if tensor.ndim == 1:
        tensor = tensor.reshape(-1, *([1] * (like.ndim - 1)))
    return tensor.to(device=like.device, dtype=like.dtype)


def square_root(values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Element-wise square root of numpy or torch coefficients, keeping the kind."""
    return torch.sqrt(values) if isinstance(values, torch.Tensor) else np.sqrt(values)
