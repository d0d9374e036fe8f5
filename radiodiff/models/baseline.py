"""RadioUNet-style supervised baseline: condition image -> gain map in one forward pass."""

from __future__ import annotations

import torch
from torch import nn

from radiodiff.models.blocks import check_divisible, conv3x3, output_head
from radiodiff.models.unet_core import UNetCore


class SupervisedUNet(nn.Module):
    """forward(cond [B, in_channels, H, W]) -> gain [B, 1, H, W] in (0, 1).

    The same trunk as the latent UNet, without time embedding or condition pyramid (the
    condition is the input). The output goes through a sigmoid rather than a clamp: a clamp
    has zero gradient wherever the raw output leaves [0, 1], so such pixels stop learning,
    while a sigmoid keeps a gradient everywhere; the zero-gain building pixels are reached
    to within 1e-3 (logit -7), well below the 1/255 quantisation of the targets. H and W
    must be divisible by 2**(len(channel_mults) - 1).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int,
        channel_mults: tuple[int, ...],
        num_res_blocks: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = tuple(base_channels * m for m in channel_mults)
        self.input_conv = conv3x3(in_channels, channels[0])
        self.core = UNetCore(channels=channels, num_res_blocks=num_res_blocks, dropout=dropout)
        self.output = output_head(channels[0], 1, zero=False)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        check_divisible(cond.shape[-2:], 2 ** (self.core.num_levels - 1), "condition")
        return torch.sigmoid(self.output(self.core(self.input_conv(cond))))
