"""Forward noising, the denoising loss, timestep draws and condition dropout for training."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from radiodiff.diffusion.prediction import Prediction, prediction_target
from radiodiff.diffusion.schedule import NoiseSchedule, as_coefficient, square_root


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0) = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise for x0, noise [B, ...], t [B]."""
    alpha_bar = schedule.alphas_cumprod_at(t)
    return as_coefficient(square_root(alpha_bar), x0) * x0 + as_coefficient(square_root(1.0 - alpha_bar), x0) * noise


def diffusion_loss(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    schedule: NoiseSchedule,
    prediction: Prediction,
) -> torch.Tensor:
    """Mean squared error (scalar, float32) between the model output and the chosen target."""
    target = prediction_target(x0, noise, t, schedule, prediction)
    return F.mse_loss(model_output.float(), target.float())


def sample_timesteps(
    batch_size: int, schedule: NoiseSchedule, *, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Uniform training timesteps [batch_size] (int64) in [0, T); generator on `device`."""
    return torch.randint(0, schedule.num_steps, (batch_size,), generator=generator, device=device)


def drop_condition_channels(
    cond: torch.Tensor,
    channel_mask: Sequence[bool],
    p: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Zero the dynamic channels of a random subset of samples; returns a new tensor.

    cond [B, C, H, W]; channel_mask has C entries, True for dynamic (Tx- or car-derived)
    channels. Each sample independently, with probability p, keeps only its static
    channels, so one network learns both the static-only condition (early trajectory of the
    midpoint bank) and the full one. The generator must live on cond's device.
    """
    mask = torch.as_tensor(list(channel_mask), dtype=torch.bool, device=cond.device)
    if mask.shape != (cond.shape[1],):
        raise ValueError(f"channel_mask has {mask.numel()} entries, condition has {cond.shape[1]} channels")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    dropped = torch.rand(cond.shape[0], generator=generator, device=cond.device) < p
    zero = dropped[:, None] & mask[None, :]
    return cond.masked_fill(zero[:, :, None, None], 0.0)
