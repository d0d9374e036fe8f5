"""Between gain in [0, 1] (the data contract) and the networks' [-1, 1]."""

from __future__ import annotations

import torch


def to_model_scale(gain: torch.Tensor) -> torch.Tensor:
    """Gain in [0, 1] -> the networks' [-1, 1]."""
    return gain * 2.0 - 1.0


def to_gain(x: torch.Tensor, buildings: torch.Tensor | None = None) -> torch.Tensor:
    """Network output in [-1, 1] -> gain in [0, 1]; 0 on building pixels when `buildings` is given
    (`[B, 1, H, W]` or `[B, H, W]`): the layout is an input, so every method gets this for free."""
    gain = ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    return gain if buildings is None else mask_buildings(gain, buildings)


def mask_buildings(gain: torch.Tensor, buildings: torch.Tensor) -> torch.Tensor:
    """Zero `gain` `[B, 1, H, W]` where `buildings` (`[B, H, W]` or `[B, 1, H, W]`) is set."""
    return gain * (1.0 - buildings.reshape(gain.shape).to(gain.dtype))
