"""The conditional latent UNet: predicts eps / v / x0 (or two heads) for a noisy latent, a time and a condition."""

from __future__ import annotations

import torch
from torch import nn

from radiodiff.options import AttentionKind
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
    (condition: cond_base_channels * channel_mults[i]). The output conv starts at zero, so an
    untrained model predicts 0.

    t is in training steps (int or float) and embedded as t * time_scale: a continuous-time
    objective on t in (0, 1] sets time_scale (e.g. 1000) so that its times span the same
    sinusoid frequencies as discrete steps. two_heads doubles the output to
    [F1 | F2] = [B, 2 * latent_channels, h, w], the raw C and noise heads of the decoupled
    objective (`radiodiff.diffusion.decoupled.precondition`); both heads share the trunk.
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
        two_heads: bool = False,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if two_heads and out_channels not in (None, 2 * latent_channels):
            raise ValueError(f"two_heads outputs {2 * latent_channels} channels, not out_channels={out_channels}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        channels = tuple(base_channels * m for m in channel_mults)
        cond_dims = tuple(cond_base_channels * m for m in channel_mults)
        time_dim = time_embed_dim or 4 * base_channels
        self.latent_channels = latent_channels
        self.cond_downsample = cond_downsample
        self.out_channels = 2 * latent_channels if two_heads else out_channels or latent_channels
        self.two_heads = two_heads
        self.time_scale = time_scale
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
        return self.denoise(x_t, t, self.encode_condition(cond))

    def encode_condition(self, cond: torch.Tensor) -> list[torch.Tensor]:
        """The condition's feature pyramid (`ConditionEncoder`), which depends on the condition
        alone: a sampler's calls on one trajectory can share it (`denoise`). At the default size
        it is about half the cost of a call."""
        return self.cond_encoder(cond)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor | int | float, features: list[torch.Tensor]) -> torch.Tensor:
        """`forward` with the condition already encoded by `encode_condition`."""
        if features[0].shape[0] != x_t.shape[0] or features[0].shape[-2:] != x_t.shape[-2:]:
            raise ValueError(f"condition features {tuple(features[0].shape)} do not match latent {tuple(x_t.shape)}")
        time_emb = self.time_embed(self._scaled_time(t), x_t.shape[0])
        h = self.input_conv(torch.cat([x_t, features[0]], dim=1))
        return self.output(self.core(h, time_emb, features))

    def _scaled_time(self, t: torch.Tensor | int | float) -> torch.Tensor | int | float:
        # Scale 1 passes t through untouched, so discrete-step models stay bit-identical.
        if self.time_scale == 1.0:
            return t
        return torch.as_tensor(t, dtype=torch.float32) * self.time_scale
