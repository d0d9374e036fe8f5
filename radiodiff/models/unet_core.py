"""The encoder-bottleneck-decoder trunk with skip connections, shared by both UNets."""

from __future__ import annotations

import torch
from torch import nn

from radiodiff.models.attention import WindowAttention
from radiodiff.options import AttentionKind
from radiodiff.models.blocks import Downsample, ResBlock, Upsample
from radiodiff.models.fft_filter import FourierFilter

# The frequency grid the bottleneck filter is stored on; resampled to the real size.
_FFT_GRID = 16


class _Layer(nn.Module):
    """A ResBlock, optionally followed by window attention."""

    def __init__(self, block: ResBlock, attention: nn.Module | None) -> None:
        super().__init__()
        self.block = block
        self.attention = attention if attention is not None else nn.Identity()

    def forward(self, h: torch.Tensor, time_emb: torch.Tensor | None, cond: torch.Tensor | None) -> torch.Tensor:
        return self.attention(self.block(h, time_emb, cond))


class UNetCore(nn.Module):
    """UNet trunk: forward(h [B, channels[0], H, W], time_emb, cond_features) -> same shape.

    Level i works at H / 2**i with `channels[i]` channels and `num_res_blocks` blocks on
    each side; every encoder block's output is a skip that one decoder block concatenates.
    With `time_dim`, blocks take a time embedding [B, time_dim]; with `cond_dims`, blocks
    at level i (encoder, decoder, and the bottleneck at the last level) take the condition
    feature cond_features[i] [B, cond_dims[i], H / 2**i, W / 2**i]. Window attention
    (alternately shifted) follows each block at levels >= 1 and in the bottleneck; the
    optional Fourier filter sits between the two bottleneck blocks.
    """

    def __init__(
        self,
        *,
        channels: tuple[int, ...],
        num_res_blocks: int,
        time_dim: int | None = None,
        cond_dims: tuple[int, ...] | None = None,
        attention: AttentionKind = AttentionKind.NONE,
        window_size: int = 4,
        fft_filter: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not channels or num_res_blocks < 1:
            raise ValueError("need at least one level and one res block per level")
        if cond_dims is not None and len(cond_dims) != len(channels):
            raise ValueError(f"cond_dims {cond_dims} must have one entry per level {channels}")
        self.num_levels = len(channels)
        self._attention = attention
        self._window_size = window_size
        self._attention_count = 0
        self._block_args = {"time_dim": time_dim, "dropout": dropout}
        self._cond_dims = cond_dims
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        current = channels[0]
        for level, width in enumerate(channels):
            layers = []
            for _ in range(num_res_blocks):
                layers.append(self._layer(current, width, level))
                current = width
            self.down.append(nn.ModuleList(layers))
            if level < self.num_levels - 1:
                self.downsample.append(Downsample(current))
        self.mid_first = self._layer(current, current, self.num_levels - 1, force_attention=True)
        self.mid_filter = FourierFilter(current, grid_size=_FFT_GRID) if fft_filter else nn.Identity()
        self.mid_second = self._layer(current, current, self.num_levels - 1)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            width = channels[level]
            layers = []
            for _ in range(num_res_blocks):
                layers.append(self._layer(current + width, width, level))
                current = width
            self.up.append(nn.ModuleList(layers))
            if level > 0:
                self.upsample.append(Upsample(current))

    def _layer(self, in_ch: int, out_ch: int, level: int, force_attention: bool = False) -> _Layer:
        cond_dim = self._cond_dims[level] if self._cond_dims is not None else None
        block = ResBlock(in_ch, out_ch, cond_dim=cond_dim, **self._block_args)
        wants_attention = level >= 1 or force_attention
        if self._attention is AttentionKind.NONE or not wants_attention:
            return _Layer(block, None)
        shifted = self._attention_count % 2 == 1
        self._attention_count += 1
        return _Layer(block, WindowAttention(out_ch, window_size=self._window_size, shifted=shifted))

    def forward(
        self,
        h: torch.Tensor,
        time_emb: torch.Tensor | None = None,
        cond_features: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        def cond_at(level: int) -> torch.Tensor | None:
            return cond_features[level] if cond_features is not None else None

        skips = []
        for level, layers in enumerate(self.down):
            for layer in layers:
                h = layer(h, time_emb, cond_at(level))
                skips.append(h)
            if level < self.num_levels - 1:
                h = self.downsample[level](h)
        last = self.num_levels - 1
        h = self.mid_first(h, time_emb, cond_at(last))
        h = self.mid_second(self.mid_filter(h), time_emb, cond_at(last))
        for index, layers in enumerate(self.up):
            level = last - index
            for layer in layers:
                h = layer(torch.cat([h, skips.pop()], dim=1), time_emb, cond_at(level))
            if level > 0:
                h = self.upsample[index](h)
        return h
