"""RadioDiff-Flux: a latent trajectory split at t_mid into a cacheable prefix and a per-query tail.

Stage 1 (static, once per scene): seeded noise x_{T-1} -> x_{t_mid} under a condition, usually
the static one (buildings only). Its latent goes to the midpoint bank.
Stage 2 (dynamic, once per query): x_{t_mid} -> clean latent under the full condition, then the
VAE decode. With t_mid = T-1 and no prefix steps, stage 2 is the whole sampler, so
stage 1 + stage 2 equals `generate` bit for bit under the same generator.

Times are integer step indices of the training schedule: T-1 is pure noise, 0 the last noisy
step, -1 (after the final step) the clean latent.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radiodiff.diffusion.sampling import DenoiseFn, ddim_step, ddpm_step, sample_loop
from radiodiff.diffusion.schedule import schedule_fingerprint
from radiodiff.generation import LatentDiffusion, SamplerKind
from radiodiff.training.rng import seeded_generator


@dataclass(frozen=True)
class FluxPlan:
    """Where the trajectory splits and how many network calls each side makes.

    prefix `[P + 1]`: descending steps T-1 .. t_mid; stage 1 runs P steps and lands on t_mid.
    tail `[S]`: descending steps t_mid .. 0; stage 2 runs all S and lands on the clean latent.
    """

    t_mid: int
    prefix: tuple[int, ...]
    tail: tuple[int, ...]

    @property
    def prefix_calls(self) -> int:
        return len(self.prefix) - 1

    @property
    def tail_calls(self) -> int:
        return len(self.tail)


def _grid(start: int, stop: int, count: int) -> tuple[int, ...]:
    """`count` descending integers from start to stop (both included when count >= 2)."""
    if count == 1:
        return (start,)
    steps = np.round(np.linspace(start, stop, count)).astype(np.int64)
    if len(set(steps.tolist())) != count:
        raise ValueError(f"{count} steps do not fit between {start} and {stop}")
    return tuple(steps.tolist())


def flux_plan(num_train_steps: int, t_mid: int, prefix_steps: int, tail_steps: int) -> FluxPlan:
    """Evenly spaced prefix (T-1 -> t_mid in `prefix_steps` calls) and tail (t_mid -> clean in
    `tail_steps` calls). `prefix_steps` must be 0 exactly when t_mid = T-1."""
    last = num_train_steps - 1
    if not 0 <= t_mid <= last:
        raise ValueError(f"t_mid must be in [0, {last}], got {t_mid}")
    if (prefix_steps == 0) != (t_mid == last) or prefix_steps < 0:
        raise ValueError(f"prefix_steps={prefix_steps} cannot reach t_mid={t_mid} from {last}")
    if not 1 <= tail_steps <= t_mid + 1:
        raise ValueError(f"tail_steps must be in [1, {t_mid + 1}], got {tail_steps}")
    prefix = _grid(last, t_mid, prefix_steps + 1)
    return FluxPlan(t_mid=t_mid, prefix=prefix, tail=_grid(t_mid, 0, tail_steps))


def _step_fn(model: LatentDiffusion, sampler: SamplerKind):
    if model.prediction.continuous:
        raise ValueError("Flux on the decoupled (kc) objective is not wired yet (issue #5)")
    step = ddpm_step if sampler is SamplerKind.DDPM else ddim_step
    return functools.partial(step, schedule=model.schedule, prediction=model.prediction)


def sampler_hash(model: LatentDiffusion, plan: FluxPlan, sampler: SamplerKind = SamplerKind.DDIM) -> str:
    """What a midpoint depends on besides the weights and the seed: schedule, prediction,
    stage-1 sampler and prefix steps (16 hex digits). The tail is free to change."""
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
    """Start latent x_{T-1} `[B, 3, h, w]` -> x_{t_mid} under `cond` `[B, C, H, W]` (usually the
    static condition). `generator` feeds a stochastic sampler; DDIM draws nothing."""
    return sample_loop(model.denoise_fn(cond), x_start, plan.prefix, _step_fn(model, sampler),
                       stop_index=plan.prefix_calls, generator=generator)


def stage2_latent(model: LatentDiffusion, midpoint: torch.Tensor, cond: torch.Tensor, plan: FluxPlan, *,
                  generator: torch.Generator | None = None, sampler: SamplerKind = SamplerKind.DDIM,
                  denoise_fn: DenoiseFn | None = None) -> torch.Tensor:
    """x_{t_mid} `[B, 3, h, w]` -> clean scaled latent under the full `cond`. `denoise_fn`
    replaces the model's own network, e.g. by a tail fine-tuned for this split."""
    denoise = denoise_fn or model.denoise_fn(cond)
    return sample_loop(denoise, midpoint, plan.tail, _step_fn(model, sampler), generator=generator)


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
