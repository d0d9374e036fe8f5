"""VAE training loss and the latent scale factor."""

from __future__ import annotations

import math

import torch

from radiodiff.models.distributions import DiagonalGaussian
from radiodiff.options import ReconKind


def vae_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    posterior: DiagonalGaussian,
    *,
    kl_weight: float = 1e-6,
    recon_kind: ReconKind = ReconKind.L1,
    pixel_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reconstruction + kl_weight * KL, both summed per sample and averaged over the batch.

    recon, target: [B, C, H, W]. Summing over pixels (as latent-diffusion's autoencoder
    does) keeps `kl_weight` on the same scale as RadioDiff's 1e-6 at any map size.
    `pixel_weight` (broadcastable to recon, e.g. `[B, 1, H, W]` of 0/1) weights the pixel
    penalty: the stages pass 0 on building pixels, whose gain is known to be 0 from the
    layout, so the latent spends nothing on building edges.
    Returns (total, parts); parts holds detached "recon", "kl" and "recon_per_pixel"
    (the mean per-pixel error, the readable number to log).
    """
    diff = recon - target
    per_pixel = diff.abs() if recon_kind is ReconKind.L1 else diff.pow(2)
    if pixel_weight is not None:
        per_pixel = per_pixel * pixel_weight
    recon_term = per_pixel.flatten(1).sum(dim=1).mean()
    kl_term = posterior.kl().mean()
    total = recon_term + kl_weight * kl_term
    parts = {
        "recon": recon_term.detach(),
        "kl": kl_term.detach(),
        "recon_per_pixel": per_pixel.detach().mean(),
    }
    return total, parts


def estimate_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of a batch of latents (any shape), so scaled latents have unit variance.

    RadioDiff's scale_by_std: computed once on a first batch of training latents and
    stored with the checkpoint by the caller. Computed in float64.
    """
    std = latents.detach().to(torch.float64).std().item()
    if latents.numel() < 2 or not math.isfinite(std) or std <= 0.0:
        raise ValueError(f"cannot estimate a latent scale from std={std} over {latents.numel()} values")
    return 1.0 / std
