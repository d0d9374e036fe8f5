"""Convolutional building blocks shared by the VAE, the latent UNet and the baseline UNet."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

_MAX_GROUPS = 32


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= 32 that divides `channels`.

    Toy-width test models (8 or 12 channels) cannot use the usual 32 groups; picking a divisor
    keeps one code path for every width.
    """
    groups = max(g for g in range(1, min(_MAX_GROUPS, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels, eps=1e-6)


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A padded 3x3 convolution that keeps the spatial size."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a module's parameters in place and return it.

    Used on the last layer of a residual branch or network so it starts as the identity
    (or as zero output); gradients still reach the zeroed weights through its input.
    """
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResBlock(nn.Module):
    """Pre-activation residual block with optional time and spatial-condition inputs.

    forward(x [B, in, H, W], time_emb [B, time_dim] | None, cond [B, cond_dim, H, W] | None)
    -> [B, out, H, W]. The time embedding scales and shifts the second normalisation
    (FiLM); the condition feature map is projected by a 1x1 convolution and added after the
    first convolution, so every block sees the condition at its own resolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        time_dim: int | None = None,
        cond_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels)
        self.time_proj = nn.Linear(time_dim, 2 * out_channels) if time_dim else None
        self.cond_proj = nn.Conv2d(cond_dim, out_channels, kernel_size=1) if cond_dim else None
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, kernel_size=1)
        )

    def forward(
        self,
        x: torch.Tensor,
        time_emb: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("this block was built with cond_dim and needs a condition map")
            h = h + self.cond_proj(cond)
        h = self.norm2(h)
        if self.time_proj is not None:
            if time_emb is None:
                raise ValueError("this block was built with time_dim and needs a time embedding")
            scale, shift = self.time_proj(F.silu(time_emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution: [B, C, H, W] -> [B, C, H/2, W/2]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W (nearest neighbour, then a 3x3 convolution): [B, C, H, W] -> [B, C, 2H, 2W].

    Nearest + conv instead of a transposed convolution avoids checkerboard artefacts.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def output_head(in_channels: int, out_channels: int, *, zero: bool) -> nn.Sequential:
    """Norm, SiLU and a 3x3 convolution to `out_channels`; `zero` zero-initialises the conv."""
    conv = conv3x3(in_channels, out_channels)
    return nn.Sequential(group_norm(in_channels), nn.SiLU(), zero_init(conv) if zero else conv)


def check_divisible(size: tuple[int, ...], factor: int, what: str) -> None:
    """Raise ValueError unless every spatial size in `size` is divisible by `factor`."""
    if any(s % factor for s in size):
        raise ValueError(f"{what} spatial size {tuple(size)} must be divisible by {factor}")
