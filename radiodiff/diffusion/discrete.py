"""The eps / v / x0 objectives on a discrete noise schedule, as one diffusion process.

Time is an integer step index: T-1 is the noisiest step, 0 the last noisy one and `CLEAN`
(-1) the clean latent after the final step. A grid of N steps holds N + 1 indices, the
last one where the N-th step lands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence

import numpy as np
import torch

from radiodiff.diffusion.losses import diffusion_loss, min_snr_weights, q_sample, sample_timesteps
from radiodiff.diffusion.sampling import StepOutput, ddim_step, ddpm_step
from radiodiff.diffusion.schedule import NoiseSchedule, schedule_fingerprint
from radiodiff.options import Prediction, SamplerKind

CLEAN = -1  # the step index "after step 0": alpha_bar = 1


def step_grid(start: int, stop: int, count: int) -> tuple[int, ...]:
    """`count` descending integers from start to stop, evenly spread (rounded); both ends
    included when count >= 2, just `start` when count = 1."""
    if count < 1:
        raise ValueError(f"need at least one step, got {count}")
    if count == 1:
        return (int(start),)
    steps = np.round(np.linspace(start, stop, count)).astype(np.int64)
    if len(set(steps.tolist())) != count:
        raise ValueError(f"{count} steps do not fit between {start} and {stop}")
    return tuple(steps.tolist())


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteProcess:
    """A `NoiseSchedule`, the network's `prediction` target and the reverse `sampler`
    (DDIM, deterministic at eta = 0; or DDPM's ancestral step). See
    `radiodiff.diffusion.process` for the contract."""

    schedule: NoiseSchedule
    prediction: Prediction
    sampler: SamplerKind = SamplerKind.DDIM
    eta: float = 0.0  # DDIM's noise scale

    time_embedding_scale = 1.0
    calls_per_step = 1
    end_time = CLEAN

    def __post_init__(self) -> None:
        if not self.prediction.on_schedule:
            raise ValueError(f"prediction {self.prediction.value} is a continuous-time objective: use make_process")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    @property
    def name(self) -> str:
        """The sampler's name: ddim or ddpm."""
        return self.sampler.value

    @property
    def num_train_steps(self) -> int:
        """T, the schedule's number of steps."""
        return self.schedule.num_steps

    @property
    def start_time(self) -> int:
        """T-1: the pure-noise end."""
        return self.schedule.num_steps - 1

    def output_channels(self, latent_channels: int) -> int:
        """One output shaped like the latent."""
        return latent_channels

    def config_time(self, steps: int) -> int:
        """A config's time in steps of T is a step index, checked to lie in [0, T-1]."""
        if not 0 <= steps <= self.start_time:
            raise ValueError(f"t_mid must be in [0, {self.start_time}], got {steps}")
        return int(steps)

    def timesteps(self, num_steps: int, start: int | None = None, end: int | None = None) -> tuple[int, ...]:
        """num_steps + 1 descending indices from `start` (default T-1) to `end` (default
        clean), evenly spread (rounded): a network call at each but the last.

        Starting at T-1 makes the first step see pure-noise statistics; ending at 0 before the
        clean end makes the last jump short. num_steps = T gives every step, as DDPM uses.
        """
        start = self.start_time if start is None else self.config_time(start)
        if end is None:
            return (*step_grid(start, 0, num_steps), CLEAN)
        return step_grid(start, self.config_time(end), num_steps + 1)

    def check_times(self, times: Sequence[int] | torch.Tensor) -> tuple[int, ...]:
        """A grid as ints, strictly descending within [-1, T-1]."""
        grid = tuple(int(t) for t in times)
        if not grid or grid[0] > self.start_time or grid[-1] < CLEAN:
            raise ValueError(f"timesteps must lie in [{CLEAN}, {self.start_time}], got {grid}")
        if any(later >= earlier for earlier, later in zip(grid, grid[1:])):
            raise ValueError(f"timesteps must be strictly descending, got {grid}")
        return grid

    def model_time(self, t: int, like: torch.Tensor) -> torch.Tensor:
        """The network's time input `[B]` int64."""
        return torch.full((like.shape[0],), t, dtype=torch.long, device=like.device)

    def step(self, model_output: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor, *,
             generator: torch.Generator | None = None) -> StepOutput:
        """One DDIM or DDPM step x_t -> x_{t_prev}."""
        if self.sampler is SamplerKind.DDPM:
            return ddpm_step(model_output, t, t_prev, x_t, self.schedule, self.prediction, generator=generator)
        return ddim_step(model_output, t, t_prev, x_t, self.schedule, self.prediction, eta=self.eta,
                         generator=generator)

    def sample_training_times(self, batch_size: int, *, generator: torch.Generator,
                              device: torch.device | str = "cpu") -> torch.Tensor:
        """Uniform training steps `[B]` int64 in [0, T)."""
        return sample_timesteps(batch_size, self.schedule, generator=generator, device=device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise."""
        return q_sample(x0, t, noise, self.schedule)

    def implied_noise(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The eps with x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, for steps `[B]` in [0, T)."""
        alpha_bar = torch.as_tensor(self.schedule.alphas_cumprod_at(t), dtype=x0.dtype, device=x0.device)
        alpha_bar = alpha_bar.view(-1, *([1] * (x0.ndim - 1)))
        return (x_t - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()

    def times_on_path(self, u: torch.Tensor, t_end: torch.Tensor) -> torch.Tensor:
        """Steps uniform on [0, t_end] for u uniform on [0, 1), all `[B]`."""
        return (u * (t_end + 1)).long()

    def training_loss(self, model_output: torch.Tensor, *, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                      x_t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """MSE of the output against the prediction target (scalar, float32), per-sample
        `weight` [B] when given."""
        return diffusion_loss(model_output, x0, noise, t, self.schedule, self.prediction, weight)

    def spec(self) -> dict:
        """What a sampled latent depends on besides the weights, the seed and the time grid.
        eta is named only when nonzero, so deterministic DDIM keeps the keys of banks built
        before it was."""
        spec = {"schedule": schedule_fingerprint(self.schedule), "prediction": self.prediction.value,
                "sampler": self.sampler.value}
        return spec | ({"eta": self.eta} if self.eta and self.sampler is SamplerKind.DDIM else {})

    def fingerprint(self) -> str:
        """16 hex digits of `spec`."""
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    def full_trajectory(self) -> tuple[DiscreteProcess, int]:
        """The reference sampler: DDPM over all T steps."""
        return dataclasses.replace(self, sampler=SamplerKind.DDPM), self.num_train_steps

    def second_order(self) -> None:
        """No second-order sampler on the discrete schedule."""
        return None


def min_snr_weighting(process) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-sample loss weights of min-SNR weighting as a function of training times t [B]
    -> [B] on t's device (`losses.min_snr_weights`), for a process on a noise schedule; a
    ValueError for another objective (kc, flow), whose losses have no alpha_bar to weigh by."""
    if not isinstance(process, DiscreteProcess):
        raise ValueError("min_snr loss weighting needs an objective on a noise schedule (eps, v, x0)")
    return lambda t: min_snr_weights(process.schedule.alphas_cumprod_at(t), process.prediction).to(t.device)
