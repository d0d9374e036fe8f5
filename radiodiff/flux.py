"""RadioDiff-Flux: a latent trajectory split at t_mid into a cacheable prefix and a per-query tail.

Stage 1 (static, once per scene): seeded noise -> x_{t_mid} under a condition, usually the
static one (buildings only). Its latent goes to the midpoint bank.
Stage 2 (dynamic, once per query): x_{t_mid} -> clean latent under the full condition, then the
VAE decode. With the split at pure noise and no prefix steps, stage 2 is the whole sampler, so
stage 1 + stage 2 equals `generate` bit for bit under the same generator.

Two kinds of time, one per kind of model:
- discrete (eps/v/x0 on a NoiseSchedule): integer step indices, T-1 pure noise, 0 the last
  noisy step, -1 (after the final step) the clean latent; DDIM or DDPM steps.
- continuous (the decoupled kc objective): t in [0, 1], 1 pure noise, 0 the clean latent;
  the decoupled sampler's deterministic step (eta = 0).
Configs give t_mid in steps of T for both (`model_flux_plan` maps it to t_mid / T for a
continuous model), so one `flux.t_mids` list sweeps either objective.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radiodiff.diffusion.decoupled import decoupled_loop, decoupled_times
from radiodiff.diffusion.sampling import DenoiseFn, ddim_step, ddpm_step, sample_loop
from radiodiff.diffusion.schedule import schedule_fingerprint
from radiodiff.generation import LatentDiffusion, SamplerKind
from radiodiff.training.rng import seeded_generator

CONTINUOUS_ETA = 0.0  # Flux runs the decoupled sampler deterministically: a midpoint is a function of its seed


@dataclass(frozen=True)
class FluxPlan:
    """Where the trajectory splits and how many network calls each side makes.

    prefix `[P + 1]`: descending times from pure noise to t_mid; stage 1 runs P steps.
    tail: descending times from t_mid; stage 2 runs all of them and lands on the clean latent.
    Discrete: S step indices t_mid .. 0 (each index one call). Continuous: S + 1 times
    t_mid .. 0 (both ends, as `decoupled_times` gives them).
    """

    t_mid: float
    prefix: tuple[float, ...]
    tail: tuple[float, ...]
    continuous: bool = False

    @property
    def prefix_calls(self) -> int:
        return len(self.prefix) - 1

    @property
    def tail_calls(self) -> int:
        return len(self.tail) - 1 if self.continuous else len(self.tail)


def _grid(start: int, stop: int, count: int) -> tuple[int, ...]:
    """`count` descending integers from start to stop (both included when count >= 2)."""
    if count == 1:
        return (start,)
    steps = np.round(np.linspace(start, stop, count)).astype(np.int64)
    if len(set(steps.tolist())) != count:
        raise ValueError(f"{count} steps do not fit between {start} and {stop}")
    return tuple(steps.tolist())


def flux_plan(num_train_steps: int, t_mid: int, prefix_steps: int, tail_steps: int) -> FluxPlan:
    """Discrete plan: evenly spaced prefix (T-1 -> t_mid in `prefix_steps` calls) and tail
    (t_mid -> clean in `tail_steps` calls). `prefix_steps` must be 0 exactly when t_mid = T-1."""
    last = num_train_steps - 1
    if not 0 <= t_mid <= last:
        raise ValueError(f"t_mid must be in [0, {last}], got {t_mid}")
    if (prefix_steps == 0) != (t_mid == last) or prefix_steps < 0:
        raise ValueError(f"prefix_steps={prefix_steps} cannot reach t_mid={t_mid} from {last}")
    if not 1 <= tail_steps <= t_mid + 1:
        raise ValueError(f"tail_steps must be in [1, {t_mid + 1}], got {tail_steps}")
    prefix = _grid(last, t_mid, prefix_steps + 1)
    return FluxPlan(t_mid=t_mid, prefix=prefix, tail=_grid(t_mid, 0, tail_steps))


def decoupled_flux_plan(t_mid: float, prefix_steps: int, tail_steps: int) -> FluxPlan:
    """Continuous plan: uniform prefix 1 -> t_mid in `prefix_steps` steps and uniform tail
    t_mid -> 0 in `tail_steps`. `prefix_steps` must be 0 exactly when t_mid = 1."""
    if not 0.0 < t_mid <= 1.0:
        raise ValueError(f"t_mid must be in (0, 1], got {t_mid}")
    if (prefix_steps == 0) != (t_mid == 1.0) or prefix_steps < 0:
        raise ValueError(f"prefix_steps={prefix_steps} cannot reach t_mid={t_mid} from 1")
    if tail_steps < 1:
        raise ValueError(f"tail_steps must be >= 1, got {tail_steps}")
    prefix = decoupled_times(prefix_steps, 1.0, t_mid) if prefix_steps else (1.0,)
    return FluxPlan(t_mid=t_mid, prefix=prefix, tail=decoupled_times(tail_steps, t_mid, 0.0), continuous=True)


def continuous_time(t_mid: int, num_train_steps: int) -> float:
    """A config's t_mid (steps of T) as continuous time: t_mid / T, and 1 for T-1 (pure noise
    in both kinds of time)."""
    return 1.0 if t_mid == num_train_steps - 1 else t_mid / num_train_steps


def model_flux_plan(model: LatentDiffusion, t_mid: int, prefix_steps: int, tail_steps: int) -> FluxPlan:
    """The plan of `model`'s kind of time for a config's t_mid (steps of T)."""
    steps = model.schedule.num_steps
    if model.prediction.continuous:
        return decoupled_flux_plan(continuous_time(t_mid, steps), prefix_steps, tail_steps)
    return flux_plan(steps, t_mid, prefix_steps, tail_steps)


def full_plan(model: LatentDiffusion, steps: int) -> FluxPlan:
    """The whole sampler as a tail from pure noise (`steps` calls): DDIM-N, DDPM or decoupled-N."""
    if model.prediction.continuous:
        return decoupled_flux_plan(1.0, 0, steps)
    last = model.schedule.num_steps - 1
    return flux_plan(last + 1, last, 0, steps)


def _run(model: LatentDiffusion, denoise: DenoiseFn, x_start: torch.Tensor, times: tuple, plan: FluxPlan,
         sampler: SamplerKind, generator: torch.Generator | None, stop_index: int | None = None) -> torch.Tensor:
    if plan.continuous != model.prediction.continuous:
        raise ValueError("a continuous-time plan needs a kc model, a discrete plan an eps/v/x0 model")
    if plan.continuous:
        return decoupled_loop(denoise, x_start, times, stop_index=stop_index, generator=generator,
                              eta=CONTINUOUS_ETA, preconditioning=model.preconditioning)
    step = ddpm_step if sampler is SamplerKind.DDPM else ddim_step
    step_fn = functools.partial(step, schedule=model.schedule, prediction=model.prediction)
    return sample_loop(denoise, x_start, times, step_fn, stop_index=stop_index, generator=generator)


def sampler_hash(model: LatentDiffusion, plan: FluxPlan, sampler: SamplerKind = SamplerKind.DDIM) -> str:
    """What a midpoint depends on besides the weights and the seed: the kind of time and its
    sampler (schedule, prediction, DDIM/DDPM; or preconditioning and eta) and the prefix
    (16 hex digits). The tail is free to change."""
    if plan.continuous:
        spec = {"objective": model.prediction.value, "preconditioning": model.preconditioning.value,
                "eta": CONTINUOUS_ETA, "prefix": [float(t) for t in plan.prefix]}
    else:
        spec = {"schedule": schedule_fingerprint(model.schedule), "prediction": model.prediction.value,
                "sampler": sampler.value, "prefix": list(plan.prefix)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def scene_noise(shape: tuple[int, ...], scene_ids: Sequence[int], seed: int) -> torch.Tensor:
    """Start latents `[B, *shape]`, row i drawn from its own generator keyed by (seed, scene_ids[i]),
    so a scene's midpoint does not depend on which scenes share its batch."""
    rows = [torch.randn(shape, generator=seeded_generator(seed * 1_000_003 + int(scene))) for scene in scene_ids]
    return torch.stack(rows)


def stage1_midpoint(model: LatentDiffusion, cond: torch.Tensor, plan: FluxPlan, x_start: torch.Tensor, *,
                    sampler: SamplerKind = SamplerKind.DDIM, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pure-noise start latent `[B, 3, h, w]` -> x_{t_mid} under `cond` `[B, C, H, W]` (usually
    the static condition). `generator` feeds a stochastic sampler; DDIM draws nothing."""
    return _run(model, model.denoise_fn(cond), x_start, plan.prefix, plan, sampler, generator,
                stop_index=plan.prefix_calls)


def stage2_latent(model: LatentDiffusion, midpoint: torch.Tensor, cond: torch.Tensor, plan: FluxPlan, *,
                  generator: torch.Generator | None = None, sampler: SamplerKind = SamplerKind.DDIM,
                  denoise_fn: DenoiseFn | None = None) -> torch.Tensor:
    """x_{t_mid} `[B, 3, h, w]` -> clean scaled latent under the full `cond`. `denoise_fn`
    replaces the model's own network, e.g. by a tail fine-tuned for this split."""
    return _run(model, denoise_fn or model.denoise_fn(cond), midpoint, plan.tail, plan, sampler, generator)


def stage2_decode(model: LatentDiffusion, midpoint: torch.Tensor, cond: torch.Tensor, plan: FluxPlan, *,
                  generator: torch.Generator | None = None, sampler: SamplerKind = SamplerKind.DDIM,
                  denoise_fn: DenoiseFn | None = None) -> torch.Tensor:
    """Stage 2 and the VAE decode: gain maps `[B, 1, H, W]` in [0, 1], 0 on buildings."""
    with torch.no_grad():
        latent = stage2_latent(model, midpoint, cond, plan, generator=generator, sampler=sampler,
                               denoise_fn=denoise_fn)
        return model.decode(latent, cond[:, 0])


def static_condition(cond: torch.Tensor, dynamic_mask: tuple[bool, ...]) -> torch.Tensor:
    """`cond` `[B, C, H, W]` with the dynamic channels (Tx, its encodings, cars) zeroed."""
    keep = torch.tensor([not dynamic for dynamic in dynamic_mask], dtype=cond.dtype, device=cond.device)
    return cond * keep[None, :, None, None]


def static_conditions(buildings: np.ndarray, channels: int) -> torch.Tensor:
    """The static condition `[S, C, H, W]` of layouts `[S, H, W]` (no query at hand): the
    buildings channel, every dynamic channel zero, as `static_condition` leaves a full one."""
    cond = torch.zeros((len(buildings), channels, *buildings.shape[1:]))
    cond[:, 0] = torch.from_numpy(np.asarray(buildings, dtype=np.float32))
    return cond
