"""Learnable frequency-domain filter for the UNet bottleneck (RadioDiff's "FFT module")."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from radiodiff.models.blocks import group_norm


class FourierFilter(nn.Module):
    """Residual global filter: y = x + irfft2(W * rfft2(norm(x))), one complex W per channel.

    forward(x [B, C, H, W]) -> [B, C, H, W]. W lives on a fixed `grid_size` x
    (grid_size/2 + 1) grid of normalised frequencies (vertical axis centred, horizontal axis
    0..0.5 cycles/pixel) and is resampled bilinearly to the actual rfft2 grid, so one
    module serves any map size; at H = W = grid_size the stored grid is used exactly.
    The transform runs in float32 (torch.fft has no bfloat16 kernels on CPU).
    """

    def __init__(self, channels: int, *, grid_size: int = 16) -> None:
        super().__init__()
        if grid_size < 2 or grid_size % 2:
            raise ValueError(f"grid_size must be an even number >= 2, got {grid_size}")
        self.grid_size = grid_size
        self.norm = group_norm(channels)
        # [2 (real, imag), C, G, G/2 + 1]; small random start as in global-filter networks.
        self.weight = nn.Parameter(0.02 * torch.randn(2, channels, grid_size, grid_size // 2 + 1))

    def frequency_response(self, height: int, width: int) -> torch.Tensor:
        """The complex filter [C, height, width//2 + 1] in torch.fft.rfft2's frequency order."""
        g = self.grid_size
        device = self.weight.device
        fy = torch.fft.fftfreq(height, device=device)
        fx = torch.fft.rfftfreq(width, device=device)
        fy_low, fy_high = -(g // 2) / g, (g - 1 - g // 2) / g
        gy = 2 * (fy - fy_low) / (fy_high - fy_low) - 1
        gx = 4 * fx - 1  # stored horizontal frequencies span [0, 0.5]
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
        stored = self.weight.float().flatten(0, 1)[None]
        response = F.grid_sample(stored, grid, mode="bilinear", padding_mode="border", align_corners=True)
        real, imag = response[0].unflatten(0, (2, -1))
        return torch.complex(real, imag)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(self.norm(x.float()), norm="ortho")
            filtered = torch.fft.irfft2(spectrum * self.frequency_response(h, w), s=(h, w), norm="ortho")
        return x + filtered.to(x.dtype)
