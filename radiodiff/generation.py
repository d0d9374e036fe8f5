"""Sampling radio maps from the latent diffusion model: the network, the VAE and the schedule
bundled (not wrapped in an nn.Module), and the loop that runs a sampler over them."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import torch

from radiodiff.diffusion.decoupled import Preconditioning, decoupled_loop, decoupled_times
from radiodiff.diffusion.prediction import Prediction
from radiodiff.diffusion.sampling import DenoiseFn, ddim_step, ddim_timesteps, ddpm_step, sample_loop
from radiodiff.diffusion.schedule import NoiseSchedule
from radiodiff.models.unet import ConditionalUNet
from radiodiff.models.vae import AutoencoderKL
from radiodiff.data.scaling import to_gain


class SamplerKind(enum.Enum):
    """Reverse-process sampler."""

    DDIM = "ddim"  # deterministic with eta = 0; any number of steps
    DDPM = "ddpm"  # ancestral; all T steps


@dataclass(frozen=True)
class LatentDiffusion:
    """Everything sampling needs. Latents seen by the UNet are VAE latents times `scale_factor`."""

    unet: ConditionalUNet
    vae: AutoencoderKL
    schedule: NoiseSchedule
    prediction: Prediction
    scale_factor: float
    preconditioning: Preconditioning = Preconditioning.MMSE  # of a two-head (kc) network

    def latent_shape(self, cond: torch.Tensor) -> tuple[int, ...]:
        """Latent shape `[B, 3, H/f, W/f]` for a condition `[B, C, H, W]`."""
        factor = self.vae.downsample_factor
        return (cond.shape[0], self.vae.latent_channels, cond.shape[-2] // factor, cond.shape[-1] // factor)

    def denoise_fn(self, cond: torch.Tensor) -> DenoiseFn:
        """The closure `(x_t, t) -> model output` a sampler loop calls, for condition `cond`."""
        return lambda x_t, t: self.unet(x_t, t, cond)

    def decode(self, latent: torch.Tensor, buildings: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled latent `[B, 3, h, w]` -> gain `[B, 1, H, W]` in [0, 1] (0 on `buildings`)."""
        return to_gain(self.vae.decode(latent / self.scale_factor), buildings)

    def encode(self, gain: torch.Tensor) -> torch.Tensor:
        """Gain `[B, 1, H, W]` in [0, 1] -> scaled posterior-mode latent."""
        return self.vae.encode(gain * 2.0 - 1.0).mode() * self.scale_factor


def sampler_plan(kind: SamplerKind, schedule: NoiseSchedule, steps: int, eta: float = 0.0):
    """(timesteps, step_fn) of a sampler with `steps` steps (DDPM always uses all T)."""
    if kind is SamplerKind.DDPM:
        return ddim_timesteps(schedule.num_steps, schedule.num_steps), functools.partial(ddpm_step, schedule=schedule)
    return ddim_timesteps(schedule.num_steps, steps), functools.partial(ddim_step, schedule=schedule, eta=eta)


def initial_noise(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard normal start latent x_T, drawn from `generator` on its device."""
    return torch.randn(shape, generator=generator, device=generator.device)


def generate(model: LatentDiffusion, cond: torch.Tensor, *, steps: int, generator: torch.Generator,
             sampler: SamplerKind = SamplerKind.DDIM, eta: float = 0.0) -> torch.Tensor:
    """Sample gain maps `[B, 1, H, W]` for conditions `[B, C, H, W]` from seeded noise.

    A decoupled (kc) model runs its own sampler on `steps` uniform times from 1 to 0, whatever
    `sampler` says; eta = 0 makes it deterministic, eta = 1 is RadioDiff's stochastic step."""
    x_start = initial_noise(model.latent_shape(cond), generator)
    if model.prediction.continuous:
        with torch.no_grad():
            latent = decoupled_loop(model.denoise_fn(cond), x_start, decoupled_times(steps), generator=generator,
                                    eta=eta, preconditioning=model.preconditioning)
            return model.decode(latent, cond[:, 0])
    timesteps, step_fn = sampler_plan(sampler, model.schedule, steps, eta)
    step_fn = functools.partial(step_fn, prediction=model.prediction)
    with torch.no_grad():
        latent = sample_loop(model.denoise_fn(cond), x_start, timesteps, step_fn, generator=generator)
        return model.decode(latent, cond[:, 0])
