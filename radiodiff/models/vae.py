"""KL autoencoder that maps a gain map [B, 1, H, W] to a small latent [B, 3, H/4, W/4] and back."""

from __future__ import annotations

import torch
from torch import nn

from radiodiff.models.blocks import Downsample, ResBlock, Upsample, check_divisible, conv3x3, output_head
from radiodiff.models.distributions import DiagonalGaussian


class Encoder(nn.Module):
    """[B, in, H, W] -> Gaussian moments [B, 2 * latent, H / f, W / f], f = 2**(levels - 1)."""

    def __init__(
        self,
        *,
        in_channels: int,
        latent_channels: int,
        channels: tuple[int, ...],
        num_res_blocks: int,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv3x3(in_channels, channels[0])]
        current = channels[0]
        for level, width in enumerate(channels):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(current, width, dropout=dropout))
                current = width
            if level < len(channels) - 1:
                layers.append(Downsample(current))
        layers += [ResBlock(current, current, dropout=dropout), ResBlock(current, current, dropout=dropout)]
        layers.append(output_head(current, 2 * latent_channels, zero=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Decoder(nn.Module):
    """Latent [B, latent, h, w] -> reconstruction [B, out, h * f, w * f] (unbounded, linear output)."""

    def __init__(
        self,
        *,
        out_channels: int,
        latent_channels: int,
        channels: tuple[int, ...],
        num_res_blocks: int,
        dropout: float,
    ) -> None:
        super().__init__()
        current = channels[-1]
        layers: list[nn.Module] = [conv3x3(latent_channels, current)]
        layers += [ResBlock(current, current, dropout=dropout), ResBlock(current, current, dropout=dropout)]
        for level in reversed(range(len(channels))):
            # One block more than the encoder, as is usual for KL autoencoders: the decoder
            # has the harder job of inventing detail.
            for _ in range(num_res_blocks + 1):
                layers.append(ResBlock(current, channels[level], dropout=dropout))
                current = channels[level]
            if level > 0:
                layers.append(Upsample(current))
        layers.append(output_head(current, out_channels, zero=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class AutoencoderKL(nn.Module):
    """Variational autoencoder with a diagonal Gaussian posterior.

    encode(x [B, in, H, W]) -> DiagonalGaussian over [B, latent, H/f, W/f];
    decode(z) -> [B, in, H, W]; f = 2**(len(channel_mults) - 1), e.g. 4 for (1, 2, 4).
    Inputs are gain maps scaled to [-1, 1]; the decoder output is not squashed, callers clamp.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        latent_channels: int = 3,
        base_channels: int,
        channel_mults: tuple[int, ...],
        num_res_blocks: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = tuple(base_channels * m for m in channel_mults)
        self.downsample_factor = 2 ** (len(channel_mults) - 1)
        self.latent_channels = latent_channels
        shared = {"latent_channels": latent_channels, "channels": channels,
                  "num_res_blocks": num_res_blocks, "dropout": dropout}
        self.encoder = Encoder(in_channels=in_channels, **shared)
        self.decoder = Decoder(out_channels=in_channels, **shared)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """The posterior q(z | x) for x [B, in, H, W]."""
        check_divisible(x.shape[-2:], self.downsample_factor, "VAE input")
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction [B, in, H, W] from latents [B, latent, H/f, W/f]."""
        return self.decoder(z)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Encode, draw one latent with `generator`, decode: -> (recon [B, in, H, W], posterior)."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior
