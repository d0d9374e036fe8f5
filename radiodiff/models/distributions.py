"""Diagonal Gaussian posterior returned by the VAE encoder."""

from __future__ import annotations

import torch

# Keeps exp(logvar) finite in float32 and bfloat16 early in training.
_LOGVAR_RANGE = (-30.0, 20.0)


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over latents [B, C, h, w].

    Built from the encoder's moments [B, 2C, h, w] (mean first, then log-variance,
    clamped to [-30, 20]).
    """

    def __init__(self, moments: torch.Tensor) -> None:
        mean, logvar = moments.chunk(2, dim=1)
        self.mean = mean
        self.logvar = logvar.clamp(*_LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised draw [B, C, h, w]; the generator must live on the tensors' device."""
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        """The most likely latent, i.e. the mean [B, C, h, w]."""
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample [B] in nats, summed over C, h, w."""
        terms = self.mean.pow(2) + torch.exp(self.logvar) - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(dim=1)
