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
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error (scalar, float32) between the model output and the chosen target,
    each sample's weighted by `weight` [B] when given (see `weighted_batch_mean`)."""
    target = prediction_target(x0, noise, t, schedule, prediction)
    if weight is None:
        return F.mse_loss(model_output.float(), target.float())
    return weighted_batch_mean((model_output.float() - target.float()).pow(2).flatten(1).mean(dim=1), weight)


def weighted_batch_mean(per_sample: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch of per-sample losses [B], each times its weight [B] when given.
    The weights are used as given (the caller normalises them, typically to mean 1), so a
    weight of all ones is the plain mean."""
    if weight is None:
        return per_sample.mean()
    if weight.shape != per_sample.shape:
        raise ValueError(f"weight must be {tuple(per_sample.shape)}, got {tuple(weight.shape)}")
    return (per_sample * weight.to(per_sample)).mean()


def energy_weights(gain: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """Per-map weights [B] proportional to 1 / mean(gain^2), normalised to mean 1 over the batch.

    gain [B, 1, H, W] in [0, 1]. The NMSE of a map is its MSE over its energy mean(gain^2), so
    the mean NMSE weighs a dark map's error by 1 / its energy; training with these weights
    gives the loss the evaluation metric's emphasis. `floor` bounds the weight of an all-dark
    map (energy 0)."""
    energy = gain.float().flatten(1).pow(2).mean(dim=1).clamp_min(floor)
    inverse = energy.reciprocal()
    return inverse / inverse.mean()


TRAFFIC_WEIGHT = 3.0  # a car map's weight over a static one's, before normalising


def traffic_weights(has_cars: torch.Tensor, factor: float = TRAFFIC_WEIGHT) -> torch.Tensor:
    """Per-map weights [B]: `factor` for a map with cars (`has_cars` [B] bool), 1 without,
    normalised to mean 1 over the batch. The cars' effect is a small change on a fifth of the
    training maps, so an unweighted loss barely asks the network for it."""
    raw = 1.0 + (factor - 1.0) * has_cars.float()
    return raw / raw.mean()


MIN_SNR_GAMMA = 5.0  # the clip of min-SNR weighting, as its authors recommend


def min_snr_weights(alpha_bar: torch.Tensor, prediction: Prediction, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """Per-sample weights [B] of min-SNR-gamma weighting (Hang et al., 2023) for timesteps
    with alpha_bar [B]: each objective's squared error weighed so that the x0 error it
    stands for counts min(SNR, gamma), SNR = alpha_bar / (1 - alpha_bar). The plain losses
    weigh the x0 error by SNR (eps), SNR + 1 (v) and 1 (x0): min-SNR takes weight off the
    low-noise draws and, for v and x0, off the noisiest ones too, where a one-call sampler runs."""
    if not prediction.on_schedule:
        raise ValueError(f"min-SNR weighting needs an objective on a noise schedule (eps, v, x0), got {prediction.value}")
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    snr = alpha_bar / (1.0 - alpha_bar).clamp_min(1e-12)
    clipped = snr.clamp_max(gamma)
    own = {Prediction.EPS: snr, Prediction.V: snr + 1.0, Prediction.X0: torch.ones_like(snr)}[prediction]
    return (clipped / own.clamp_min(1e-12)).float()


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
