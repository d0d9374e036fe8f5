"""Networks: the KL autoencoder, the conditional latent UNet and the supervised baseline."""

from radiodiff.models.attention import AttentionKind
from radiodiff.models.baseline import SupervisedUNet
from radiodiff.models.distributions import DiagonalGaussian
from radiodiff.models.unet import ConditionalUNet
from radiodiff.models.vae import AutoencoderKL
from radiodiff.models.vae_loss import ReconKind, estimate_scale_factor, vae_loss

__all__ = [
    "AttentionKind",
    "AutoencoderKL",
    "ConditionalUNet",
    "DiagonalGaussian",
    "ReconKind",
    "SupervisedUNet",
    "estimate_scale_factor",
    "vae_loss",
]
