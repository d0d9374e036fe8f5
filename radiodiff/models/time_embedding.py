"""Sinusoidal diffusion-timestep embedding followed by a small MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

_MAX_PERIOD = 10_000.0


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Embed timesteps [B] (int or float, in steps) as [B, dim] float32 cosines and sines.

    Frequencies are geometric from 1 down to 1/10000 cycles per radian step, as in the
    Transformer position encoding; an odd `dim` gets one zero column.
    """
    half = dim // 2
    exponents = torch.arange(half, device=timesteps.device, dtype=torch.float32) / max(half, 1)
    freqs = torch.exp(-math.log(_MAX_PERIOD) * exponents)
    args = timesteps.to(torch.float32)[:, None] * freqs[None, :]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


class TimeEmbedding(nn.Module):
    """Timesteps [B] (or a scalar) -> embedding [B, out_dim] via sinusoids and a 2-layer MLP."""

    def __init__(self, *, sinusoid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.mlp = nn.Sequential(
            nn.Linear(sinusoid_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, timesteps: torch.Tensor, batch_size: int) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=self.mlp[0].weight.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch_size)
        if timesteps.shape != (batch_size,):
            raise ValueError(f"timesteps must be a scalar or [{batch_size}], got {tuple(timesteps.shape)}")
        return self.mlp(sinusoidal_embedding(timesteps, self.sinusoid_dim))
