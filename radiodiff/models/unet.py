"""The conditional latent UNet: predicts eps / v / x0 for a noisy latent, a timestep and a condition."""

from __future__ import annotations

import torch
from torch import nn

from radiodiff.models.attention import AttentionKind
from radiodiff.models.blocks import conv3x3, output_head
from radiodiff.models.condition import ConditionEncoder
from radiodiff.models.time_embedding import TimeEmbedding
from radiodiff.models.unet_core import UNetCore


class ConditionalUNet(nn.Module):
    """Latent denoiser: forward(x_t [B, latent, h, w], t [B] or scalar, cond [B, C, H, W]) -> [B, out, h, w].

    H = cond_downsample * h (the VAE's factor, 4 by default). The condition encoder turns
    the full-resolution condition into one feature map per UNet level; level 0 is
    concatenated with x_t at the input, and every ResBlock of level i (encoder, decoder,
    bottleneck) adds a projection of the level-i map, so the Tx position reaches every
    scale including the finest. Level i has base_channels * channel_mults[i] channels
    (condition: cond_base_channels * channel_mults[i]). t is in training steps (int or
    float). The output conv starts at zero, so an untrained model predicts 0.
    """

    def __init__(
        self,
        *,
        latent_channels: int = 3,
        cond_channels: int,
        base_channels: int,
        channel_mults: tuple[int, ...],
        num_res_blocks: int,
        cond_base_channels: int,
        attention: AttentionKind = AttentionKind.NONE,
        window_size: int = 4,
        fft_filter: bool = False,
        out_channels: int | None = None,
        time_embed_dim: int | None = None,
        cond_downsample: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = tuple(base_channels * m for m in channel_mults)
        cond_dims = tuple(cond_base_channels * m for m in channel_mults)
        time_dim = time_embed_dim or 4 * base_channels
        self.latent_channels = latent_channels
        self.cond_downsample = cond_downsample
        self.out_channels = out_channels or latent_channels
        self.time_embed = TimeEmbedding(sinusoid_dim=base_channels, out_dim=time_dim)
        self.cond_encoder = ConditionEncoder(
            in_channels=cond_channels,
            base_channels=cond_base_channels,
            downsample_factor=cond_downsample,
            level_channels=cond_dims,
        )
        self.input_conv = conv3x3(latent_channels + cond_dims[0], channels[0])
        self.core = UNetCore(
            channels=channels,
            num_res_blocks=num_res_blocks,
            time_dim=time_dim,
            cond_dims=cond_dims,
            attention=attention,
            window_size=window_size,
            fft_filter=fft_filter,
            dropout=dropout,
        )
        self.output = output_head(channels[0], self.out_channels, zero=True)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | int | float, cond: torch.Tensor) -> torch.Tensor:
        expected = tuple(self.cond_downsample * s for s in x_t.shape[-2:])
        if tuple(cond.shape[-2:]) != expected or cond.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"condition {tuple(cond.shape)} does not match latent {tuple(x_t.shape)}: "
                f"expected batch {x_t.shape[0]} and spatial size {expected}"
            )
        features = self.cond_encoder(cond)
        time_emb = self.time_embed(t, x_t.shape[0])
        h = self.input_conv(torch.cat([x_t, features[0]], dim=1))
        return self.output(self.core(h, time_emb, features))
