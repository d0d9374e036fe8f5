"""Diffusion math as pure functions: schedules, targets, losses and samplers (no nn.Module)."""

from radiodiff.diffusion.decoupled import (
    Preconditioning,
    decoupled_loop,
    decoupled_loop_progressive,
    decoupled_loss,
    decoupled_step,
    decoupled_times,
    precondition,
    q_sample_decoupled,
    sample_times,
)
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
    "Preconditioning",
    "Prediction",
    "ScheduleKind",
    "StepOutput",
    "cosine_betas",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_step",
    "decoupled_loop",
    "decoupled_loop_progressive",
    "decoupled_loss",
    "decoupled_step",
    "decoupled_times",
    "diffusion_loss",
    "drop_condition_channels",
    "guided_denoise_fn",
    "linear_betas",
    "make_schedule",
    "precondition",
    "prediction_target",
    "q_sample",
    "q_sample_decoupled",
    "sample_loop",
    "sample_loop_progressive",
    "sample_times",
    "sample_timesteps",
    "schedule_fingerprint",
    "split_prediction",
]

