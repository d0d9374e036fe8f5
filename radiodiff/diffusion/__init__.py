"""Diffusion math as pure functions and processes (no nn.Module): schedules, targets, losses,
steps, the one sampling loop, and the process interface every objective implements."""

from radiodiff.diffusion.continuous import ContinuousTime, decoupled_times
from radiodiff.diffusion.decoupled import (
    DecoupledProcess,
    decoupled_loss,
    decoupled_step,
    precondition,
    q_sample_decoupled,
    sample_times,
)
from radiodiff.diffusion.discrete import CLEAN, DiscreteProcess
from radiodiff.diffusion.flow import FlowMatchingProcess, euler_step, flow_velocity, q_sample_flow
from radiodiff.diffusion.losses import diffusion_loss, drop_condition_channels, q_sample, sample_timesteps
from radiodiff.diffusion.prediction import prediction_target, split_prediction
from radiodiff.diffusion.process import DiffusionProcess, make_process
from radiodiff.diffusion.sampling import (
    StepOutput,
    ddim_step,
    ddpm_step,
    guided_denoise_fn,
    sample_loop,
    sample_loop_progressive,
)
from radiodiff.diffusion.schedule import (
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    make_schedule,
    schedule_fingerprint,
)
from radiodiff.options import Preconditioning, Prediction, ScheduleKind

__all__ = [
    "CLEAN",
    "ContinuousTime",
    "DecoupledProcess",
    "DiffusionProcess",
    "DiscreteProcess",
    "FlowMatchingProcess",
    "NoiseSchedule",
    "Preconditioning",
    "Prediction",
    "ScheduleKind",
    "StepOutput",
    "cosine_betas",
    "ddim_step",
    "ddpm_step",
    "decoupled_loss",
    "decoupled_step",
    "decoupled_times",
    "diffusion_loss",
    "drop_condition_channels",
    "euler_step",
    "flow_velocity",
    "guided_denoise_fn",
    "linear_betas",
    "make_process",
    "make_schedule",
    "precondition",
    "prediction_target",
    "q_sample",
    "q_sample_decoupled",
    "q_sample_flow",
    "sample_loop",
    "sample_loop_progressive",
    "sample_times",
    "sample_timesteps",
    "schedule_fingerprint",
    "split_prediction",
]
