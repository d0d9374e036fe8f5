"""Sampling radio maps from the latent diffusion model: the network, the VAE and the diffusion
process bundled (not wrapped in an nn.Module), and the whole sampler from pure noise."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ContextManager

import torch

from radiodiff import devices
from radiodiff.data.scaling import to_gain
from radiodiff.diffusion.process import DiffusionProcess
from radiodiff.diffusion.sampling import DenoiseFn, sample_loop
from radiodiff.models.unet import ConditionalUNet
from radiodiff.models.vae import AutoencoderKL
from radiodiff.options import Precision


@dataclass(frozen=True)
class LatentDiffusion:
    """Everything sampling needs. Latents seen by the UNet are VAE latents times `scale_factor`;
    `process` is the objective the UNet was trained on, with the sampler that runs it. The
    networks run at `precision` (a resolved one: fp32, bf16 or fp16 autocast); what the sampler
    and callers see is float32 either way."""

    unet: ConditionalUNet
    vae: AutoencoderKL
    process: DiffusionProcess
    scale_factor: float
    precision: Precision = Precision.FP32

    @property
    def device(self) -> torch.device:
        """Where the networks live: conditions and start latents are moved here."""
        return devices.module_device(self.unet)

    def autocast(self) -> ContextManager:
        """The autocast context the networks run under."""
        return devices.autocast(self.device, self.precision)

    def with_precision(self, precision: Precision) -> LatentDiffusion:
        """The same networks sampling at another resolved precision."""
        return dataclasses.replace(self, precision=precision)

    def with_process(self, process: DiffusionProcess) -> LatentDiffusion:
        """The same networks under another sampler of their objective (e.g. DDPM for DDIM)."""
        return dataclasses.replace(self, process=process)

    def latent_shape(self, cond: torch.Tensor) -> tuple[int, ...]:
        """Latent shape `[B, 3, H/f, W/f]` for a condition `[B, C, H, W]`."""
        factor = self.vae.downsample_factor
        return (cond.shape[0], self.vae.latent_channels, cond.shape[-2] // factor, cond.shape[-1] // factor)

    def denoise_fn(self, cond: torch.Tensor) -> DenoiseFn:
        """The closure `(x_t, t) -> model output` a sampler loop calls, for condition `cond`
        (`trajectory_denoiser` of the model's own network)."""
        return trajectory_denoiser(self.unet, cond)

    def decode(self, latent: torch.Tensor, buildings: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled latent `[B, 3, h, w]` -> gain `[B, 1, H, W]` in [0, 1] (0 on `buildings`)."""
        return to_gain(self.vae.decode(latent / self.scale_factor).float(), buildings)

    def encode(self, gain: torch.Tensor) -> torch.Tensor:
        """Gain `[B, 1, H, W]` in [0, 1] -> scaled posterior-mode latent."""
        return self.vae.encode(gain * 2.0 - 1.0).mode().float() * self.scale_factor


def trajectory_denoiser(unet: ConditionalUNet, cond: torch.Tensor) -> DenoiseFn:
    """The closure `(x_t, t) -> unet output` (float32) for one trajectory under `cond`. The
    condition is encoded once, at the first call (under that call's grad mode and autocast), and
    shared by the later ones: it is the same on the whole trajectory, and its encoder is about
    half of a call."""
    features: list[list[torch.Tensor]] = []

    def call(x_t: torch.Tensor, t) -> torch.Tensor:
        if not features:
            features.append(unet.encode_condition(cond))
        return unet.denoise(x_t, t, features[0]).float()

    return call


def initial_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard normal start latent x_T, drawn from `generator` on its device (a seeded CPU
    generator gives the same start latent whatever device the model runs on)."""
    return torch.randn(shape, generator=generator, device=generator.device)


def generate(model: LatentDiffusion, cond: torch.Tensor, *, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Sample gain maps `[B, 1, H, W]` for conditions `[B, C, H, W]` from seeded noise: `steps`
    steps of the model's own sampler over its whole time range. This is the Flux path with the
    split at pure noise (`radiodiff.flux.full_plan`), so both give the same maps bit for bit."""
    process, cond = model.process, cond.to(model.device)
    x_start = initial_noise(model.latent_shape(cond), generator).to(model.device)
    with torch.no_grad(), model.autocast():
        latent = sample_loop(process, model.denoise_fn(cond), x_start, process.timesteps(steps), generator=generator)
        return model.decode(latent, cond[:, 0])
