"""Diffusion math as pure functions: schedules, targets, losses and samplers (no nn.Module)."""

from radiodiff.diffusion.losses import diffusion_loss, drop_condition_channels, q_sample, sample_timesteps
from radiodiff.diffusion.prediction import Prediction, prediction_target, split_prediction
from radiodiff.diffusion.sampling import (
    StepOutput,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    guided_denoise_fn,
    sample_loop,
    sample_loop_progressive,
)
from radiodiff.diffusion.schedule import (
    NoiseSchedule,
    ScheduleKind,
    cosine_betas,
    linear_betas,
    make_schedule,
    schedule_fingerprint,
)

__all__ = [
    "NoiseSchedule",
    "Prediction",
    "ScheduleKind",
    "StepOutput",
    "cosine_betas",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_step",
    "diffusion_loss",
    "drop_condition_channels",
    "guided_denoise_fn",
    "linear_betas",
    "make_schedule",
    "prediction_target",
    "q_sample",
    "sample_loop",
    "sample_loop_progressive",
    "sample_timesteps",
    "schedule_fingerprint",
    "split_prediction",
]

