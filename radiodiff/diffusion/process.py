"""The one interface every diffusion objective implements, after diffusers' scheduler contract.

A process owns its kind of time and everything that depends on it; nothing above
`radiodiff.diffusion` asks which objective it holds. Times run from `start_time` (pure
noise) to `end_time` (the clean latent): integer steps of a noise schedule (T-1 .. -1) for
eps / v / x0, continuous t in [1, 0] for the decoupled KC objective and for flow matching.

- sampling: `timesteps(N, start, end)` is a grid of N + 1 times (one network call at each
  but the last); `step(output, t, t_prev, x_t, generator=)` moves x_t to t_prev and returns a
  `StepOutput` (prev_sample, pred_x0); `model_time(t, x)` is the network's time input.
  `radiodiff.diffusion.sampling.sample_loop` runs any process; a RadioDiff-Flux plan is a
  split of one grid (`radiodiff.flux`).
- training: `sample_training_times`, `add_noise` (x0, noise, t -> x_t), `training_loss` of
  the raw network output (optionally weighted per sample), `implied_noise` (the noise that
  puts x0 at x_t: the inverse of `add_noise`), `times_on_path` (uniform times between the
  clean end and t).
- keys: `spec()` / `fingerprint()` name what a sampled latent depends on besides the
  weights, seed and grid (the midpoint bank's sampler key).
- `config_time(steps)` reads a params time given in steps of T; `full_trajectory()` is the
  slow reference sampler (DDPM over all T steps) or None; `second_order()` the same model with
  a two-call predictor-corrector sampler (Heun for flow matching) or None;
  `output_channels(c)` and `time_embedding_scale` are what the network must provide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from radiodiff.diffusion.decoupled import DecoupledProcess
from radiodiff.diffusion.discrete import DiscreteProcess
from radiodiff.diffusion.flow import FlowMatchingProcess
from radiodiff.diffusion.sampling import StepOutput
from radiodiff.diffusion.schedule import make_schedule
from radiodiff.options import Prediction

if TYPE_CHECKING:
    from radiodiff.config import DiffusionConfig

Time = int | float


class DiffusionProcess(Protocol):
    """What the samplers, trainers and the bank need of an objective (see the module doc)."""

    name: str
    num_train_steps: int
    start_time: Time
    end_time: Time
    time_embedding_scale: float

    def output_channels(self, latent_channels: int) -> int: ...

    def config_time(self, steps: int) -> Time: ...

    def timesteps(self, num_steps: int, start: Time | None = None, end: Time | None = None) -> tuple: ...

    def check_times(self, times: Sequence[Time] | torch.Tensor) -> tuple: ...

    def model_time(self, t: Time, like: torch.Tensor) -> torch.Tensor: ...

    def step(self, model_output: torch.Tensor, t: Time, t_prev: Time, x_t: torch.Tensor, *,
             generator: torch.Generator | None = None) -> StepOutput: ...

    def sample_training_times(self, batch_size: int, *, generator: torch.Generator,
                              device: torch.device | str = "cpu") -> torch.Tensor: ...

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def implied_noise(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def times_on_path(self, u: torch.Tensor, t_end: torch.Tensor) -> torch.Tensor: ...

    def training_loss(self, model_output: torch.Tensor, *, x0: torch.Tensor, noise: torch.Tensor,
                      t: torch.Tensor, x_t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor: ...

    def spec(self) -> dict: ...

    def fingerprint(self) -> str: ...

    def full_trajectory(self) -> tuple[DiffusionProcess, int] | None: ...

    # Network calls per step. A process with 2 also has `correct(output, next_output, t, t_prev,
    # x_t)`: `step` is its predictor, and the loop calls the network again at step's result.
    calls_per_step: int

    def second_order(self) -> DiffusionProcess | None: ...


def make_process(cfg: DiffusionConfig) -> DiffusionProcess:
    """The process of params' `diffusion` section: its objective on its schedule (or on
    continuous time for kc and flow), with the deterministic sampler (eta 0, Euler for flow)."""
    if cfg.prediction is Prediction.KC:
        return DecoupledProcess(num_train_steps=cfg.num_steps, preconditioning=cfg.preconditioning)
    if cfg.prediction is Prediction.FLOW:
        return FlowMatchingProcess(num_train_steps=cfg.num_steps)
    return DiscreteProcess(make_schedule(cfg.schedule, cfg.num_steps), cfg.prediction)
