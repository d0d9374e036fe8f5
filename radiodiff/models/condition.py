"""Condition encoder: full-resolution condition image -> one feature map per UNet level."""

from __future__ import annotations

import torch
from torch import nn

from radiodiff.models.blocks import Downsample, ResBlock, check_divisible, conv3x3


class ConditionEncoder(nn.Module):
    """Encode the condition [B, C, H, W] into a feature pyramid matching the latent UNet.

    forward(cond) -> [f_0, ..., f_{L-1}] with f_i of shape
    [B, level_channels[i], H / (downsample_factor * 2**i), W / (downsample_factor * 2**i)].
    The input stages (a ResBlock then a stride-2 conv, log2(downsample_factor) times, at
    `base_channels`) bring the map from pixel to latent resolution while it still sees
    every pixel, so a one-pixel Tx or a thin wall survives the reduction; each level then
    adds a ResBlock (and a downsample before it, from level 1 on).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int,
        downsample_factor: int,
        level_channels: tuple[int, ...],
    ) -> None:
        super().__init__()
        if downsample_factor < 1 or downsample_factor & (downsample_factor - 1):
            raise ValueError(f"downsample_factor must be a power of two, got {downsample_factor}")
        self.downsample_factor = downsample_factor
        self.num_levels = len(level_channels)
        self.stem = conv3x3(in_channels, base_channels)
        self.input_stages = nn.Sequential(
            *(
                nn.Sequential(ResBlock(base_channels, base_channels), Downsample(base_channels))
                for _ in range(downsample_factor.bit_length() - 1)
            )
        )
        self.levels = nn.ModuleList()
        channels = base_channels
        for index, out_channels in enumerate(level_channels):
            down = Downsample(channels) if index > 0 else nn.Identity()
            self.levels.append(nn.Sequential(down, ResBlock(channels, out_channels)))
            channels = out_channels

    def forward(self, cond: torch.Tensor) -> list[torch.Tensor]:
        factor = self.downsample_factor * 2 ** (self.num_levels - 1)
        check_divisible(cond.shape[-2:], factor, "condition")
        h = self.input_stages(self.stem(cond))
        features = []
        for level in self.levels:
            h = level(h)
            features.append(h)
        return features
