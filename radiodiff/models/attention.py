"""Swin-style (shifted) window self-attention over a feature map."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from radiodiff.models.blocks import group_norm

_HEAD_DIM = 32


def _window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, nW, ws*ws, C], windows in row-major order."""
    return rearrange(x, "b (rows r) (cols s) c -> b (rows cols) (r s) c", r=ws, s=ws)


def _window_merge(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `_window_partition`: [B, nW, ws*ws, C] -> [B, H, W, C]."""
    return rearrange(windows, "b (rows cols) (r s) c -> b (rows r) (cols s) c", rows=h // ws, r=ws, s=ws)


def _shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Bool [nW, N, N], True where two tokens of a shifted window came from different regions.

    After the cyclic roll, windows on the last row/column mix pixels from opposite map edges;
    those pairs must not attend to each other (a radio map is not a torus).
    """
    labels = torch.zeros(h, w, device=device)
    bands = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for i, rows in enumerate(bands):
        for j, cols in enumerate(bands):
            labels[rows, cols] = 3 * i + j
    windows = _window_partition(labels[None, :, :, None], ws)[0, :, :, 0]
    return windows[:, :, None] != windows[:, None, :]


class WindowAttention(nn.Module):
    """Residual multi-head self-attention inside non-overlapping (optionally shifted) windows.

    forward(x [B, C, H, W]) -> [B, C, H, W]. Heads have 32 channels (at least one head). A
    learned relative-position bias per head is added to the logits. The window shrinks to
    min(window_size, H, W) on small maps; H and W must then be multiples of it. `shifted`
    rolls the map by half a window first so that stacked blocks exchange information
    across window borders.
    """

    def __init__(self, channels: int, *, window_size: int, shifted: bool) -> None:
        super().__init__()
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.window_size = window_size
        self.shifted = shifted
        self.num_heads = max(1, channels // _HEAD_DIM)
        if channels % self.num_heads:
            raise ValueError(f"channels {channels} not divisible into {self.num_heads} heads")
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        span = 2 * window_size - 1
        self.relative_bias = nn.Parameter(torch.zeros(span * span, self.num_heads))
        nn.init.trunc_normal_(self.relative_bias, std=0.02)

    def _bias(self, ws: int, device: torch.device) -> torch.Tensor:
        """Relative-position bias [heads, N, N] for a ws x ws window (ws <= window_size)."""
        coords = torch.stack(
            torch.meshgrid(torch.arange(ws, device=device), torch.arange(ws, device=device), indexing="ij")
        ).flatten(1)
        delta = coords[:, :, None] - coords[:, None, :] + (self.window_size - 1)
        index = delta[0] * (2 * self.window_size - 1) + delta[1]
        return self.relative_bias[index].permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws = min(self.window_size, h, w)
        if h % ws or w % ws:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window size {ws}")
        shift = ws // 2 if self.shifted and ws < min(h, w) else 0
        tokens = self.norm(x).permute(0, 2, 3, 1)
        if shift:
            tokens = torch.roll(tokens, shifts=(-shift, -shift), dims=(1, 2))
        windows = _window_partition(tokens, ws)
        n_windows = windows.shape[1]
        q, k, v = rearrange(self.qkv(windows), "b n t (three heads d) -> three b n heads t d", three=3,
                            heads=self.num_heads).unbind(0)
        bias = self._bias(ws, x.device)[None].expand(n_windows, -1, -1, -1)
        if shift:
            bias = bias.masked_fill(_shift_mask(h, w, ws, shift, x.device)[:, None], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        out = self.proj(rearrange(out, "b n heads t d -> b n t (heads d)"))
        out = _window_merge(out, ws, h, w)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return x + out.permute(0, 3, 1, 2)
