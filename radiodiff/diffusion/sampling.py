"""DDIM and DDPM steps and the one sampling loop of every process; the network stays outside,
behind `denoise_fn`.

Symbols (DDIM paper): ab_t = alphas_cumprod[t], ab_prev = alphas_cumprod[t_prev] (1 for
t_prev = -1, the clean end); x_{t_prev} = sqrt(ab_prev) x0_hat
+ sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z with
sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from radiodiff.diffusion.prediction import Prediction, split_prediction
from radiodiff.diffusion.schedule import NoiseSchedule, as_coefficient

if TYPE_CHECKING:
    from radiodiff.diffusion.process import DiffusionProcess

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StepOutput(NamedTuple):
    """One reverse step: the latent at t_prev and the model's current clean estimate (same shape)."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, on x's device: drawn on the generator's own device
    and moved, so a seeded CPU generator gives the same draws whatever device samples."""
    device = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def ddim_step(
    model_output: torch.Tensor,
    t: int | torch.Tensor,
    t_prev: int | torch.Tensor,
    x_t: torch.Tensor,
    schedule: NoiseSchedule,
    prediction: Prediction,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One DDIM step x_t -> x_{t_prev}; eta = 0 is deterministic and draws no noise."""
    pred_x0, pred_eps = split_prediction(model_output, x_t, t, schedule, prediction)
    ab_t = schedule.alphas_cumprod_at(t)
    ab_prev = schedule.alphas_cumprod_at(t_prev)
    sigma = eta * np.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev))
    direction = np.sqrt(np.clip(1.0 - ab_prev - sigma**2, 0.0, None))
    prev = as_coefficient(np.sqrt(ab_prev), x_t) * pred_x0 + as_coefficient(direction, x_t) * pred_eps
    if np.any(sigma > 0):
        prev = prev + as_coefficient(sigma, x_t) * noise_like(x_t, generator)
    return StepOutput(prev_sample=prev, pred_x0=pred_x0)


def ddpm_step(
    model_output: torch.Tensor,
    t: int | torch.Tensor,
    t_prev: int | torch.Tensor,
    x_t: torch.Tensor,
    schedule: NoiseSchedule,
    prediction: Prediction,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """One ancestral step: draw x_{t_prev} ~ q(x_{t_prev} | x_t, x0_hat), the Gaussian posterior.

    Uses the posterior variance beta_tilde = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev),
    which is 0 at the final step (t_prev = -1); t_prev = t - 1 is classic DDPM.
    """
    pred_x0, _ = split_prediction(model_output, x_t, t, schedule, prediction)
    ab_t = schedule.alphas_cumprod_at(t)
    ab_prev = schedule.alphas_cumprod_at(t_prev)
    beta = 1.0 - ab_t / ab_prev
    coef_x0 = np.sqrt(ab_prev) * beta / (1.0 - ab_t)
    coef_xt = np.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t)
    variance = beta * (1.0 - ab_prev) / (1.0 - ab_t)
    prev = as_coefficient(coef_x0, x_t) * pred_x0 + as_coefficient(coef_xt, x_t) * x_t
    if np.any(variance > 0):
        prev = prev + as_coefficient(np.sqrt(variance), x_t) * noise_like(x_t, generator)
    return StepOutput(prev_sample=prev, pred_x0=pred_x0)


def sample_loop_progressive(
    process: DiffusionProcess,
    denoise_fn: DenoiseFn,
    x_start: torch.Tensor,
    times: Sequence[int | float] | torch.Tensor,
    *,
    start_index: int = 0,
    stop_index: int | None = None,
    generator: torch.Generator | None = None,
    grad: bool = False,
) -> Iterator[StepOutput]:
    """Run steps [start_index, stop_index) over the grid `times`, yielding each StepOutput.

    times holds N + 1 times of `process` (e.g. `process.timesteps(N)`): step i goes from
    times[i] to times[i + 1], so stop_index = N (the default) lands on times[N] and
    stop_index = k hands back the latent at times[k]. x_start [B, ...] is the latent at
    times[start_index]; denoise_fn(x_t, process.model_time(t, x_t)) returns the raw network
    output. A process with two calls per step has its predictor's result corrected with the
    network's output there (`process.correct`), except on a step into the clean end: there the
    network's output is not the path's (at t = 0 the noise is unknowable, so a velocity net
    answers -x0), and the predictor's result stands, as in EDM's Heun sampler (calls:
    `network_calls`). The loop holds no state besides x and the
    generator, so [0, k) then [k, N) with the same generator equals [0, N) bit for bit. Runs
    without autograd unless `grad`: a fine-tuning that trains the sampler's own path end to end
    needs the graph through every step.
    """
    grid = process.check_times(times)
    stop = len(grid) - 1 if stop_index is None else stop_index
    if not 0 <= start_index <= stop <= len(grid) - 1:
        raise ValueError(f"need 0 <= start_index ({start_index}) <= stop_index ({stop}) <= {len(grid) - 1}")
    x = x_start
    for index in range(start_index, stop):
        t, t_prev = grid[index], grid[index + 1]
        # The grad mode only around the work: a `with` spanning the yield would leak it
        # into the caller while this generator is suspended.
        with torch.set_grad_enabled(grad):
            model_output = denoise_fn(x, process.model_time(t, x))
            output = process.step(model_output, t, t_prev, x, generator=generator)
            if process.calls_per_step == 2 and t_prev != process.end_time:
                next_output = denoise_fn(output.prev_sample, process.model_time(t_prev, x))
                output = process.correct(model_output, next_output, t, t_prev, x)
        x = output.prev_sample
        yield output


def network_calls(process: DiffusionProcess, steps: int) -> int:
    """Network evaluations of `steps` steps of `process` that end at its clean end: one a step,
    or for a two-call process two a step but one on the last (see `sample_loop_progressive`)."""
    return steps if process.calls_per_step == 1 else 2 * steps - 1


def sample_loop(
    process: DiffusionProcess,
    denoise_fn: DenoiseFn,
    x_start: torch.Tensor,
    times: Sequence[int | float] | torch.Tensor,
    *,
    start_index: int = 0,
    stop_index: int | None = None,
    generator: torch.Generator | None = None,
    grad: bool = False,
) -> torch.Tensor:
    """Like `sample_loop_progressive` but returns only the last prev_sample (x_start if no step)."""
    return last_sample(sample_loop_progressive(process, denoise_fn, x_start, times, start_index=start_index,
                                               stop_index=stop_index, generator=generator, grad=grad), x_start)


def last_sample(outputs: Iterable[StepOutput], x_start: torch.Tensor) -> torch.Tensor:
    """The prev_sample of the last of a loop's `outputs`, or `x_start` if it ran no step."""
    x = x_start
    for output in outputs:
        x = output.prev_sample
    return x


def guided_denoise_fn(cond_fn: DenoiseFn, uncond_fn: DenoiseFn, guidance_scale: float) -> DenoiseFn:
    """Classifier-free guidance: uncond + scale * (cond - uncond); scale 1 calls cond_fn only.

    Valid for any objective whose output is linear in the prediction (eps, v, x0, the raw KC heads).
    """
    if guidance_scale == 1.0:
        return cond_fn

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        uncond = uncond_fn(x_t, t)
        return uncond + guidance_scale * (cond_fn(x_t, t) - uncond)

    return guided
