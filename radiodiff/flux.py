"""RadioDiff-Flux: a split of one sampler's time grid into a cacheable prefix and a per-query tail.

Stage 1 (static, once per scene): seeded noise -> x_{t_mid} under a condition, usually the
static one (buildings only). Its latent goes to the midpoint bank.
Stage 2 (dynamic, once per query): x_{t_mid} -> clean latent under the full condition, then the
VAE decode. With the split at pure noise and no prefix steps, stage 2 is the whole sampler, so
stage 1 + stage 2 equals `generate` bit for bit under the same generator.

Nothing here knows the kind of objective: the model's diffusion process gives the times
(`timesteps`), reads a config's t_mid given in steps of T (`config_time`: the step index of a
discrete schedule, t_mid / T of continuous time), and names what a midpoint depends on (`spec`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radiodiff.diffusion.process import DiffusionProcess
from radiodiff.diffusion.sampling import DenoiseFn, sample_loop
from radiodiff.generation import LatentDiffusion
from radiodiff.training.rng import seeded_generator


@dataclass(frozen=True)
class FluxPlan:
    """Where the trajectory splits and how many network calls each side makes.

    prefix `[P + 1]`: descending times from pure noise to t_mid; stage 1 runs P steps.
    tail `[S + 1]`: descending times from t_mid to the clean end; stage 2 runs S steps.
    Times are the process's own (step indices, or continuous t).
    """

    t_mid: int | float
    prefix: tuple
    tail: tuple

    @property
    def prefix_calls(self) -> int:
        return len(self.prefix) - 1

    @property
    def tail_calls(self) -> int:
        return len(self.tail) - 1


def flux_plan(process: DiffusionProcess, t_mid: int, prefix_steps: int, tail_steps: int) -> FluxPlan:
    """Evenly spaced prefix (pure noise -> t_mid in `prefix_steps` calls) and tail (t_mid ->
    clean in `tail_steps` calls); t_mid in steps of T, as params give it. `prefix_steps` must
    be 0 exactly when t_mid is the pure-noise end."""
    mid = process.config_time(t_mid)
    start = process.start_time
    if (prefix_steps == 0) != (mid == start) or prefix_steps < 0:
        raise ValueError(f"prefix_steps={prefix_steps} cannot reach t_mid={t_mid} from {start}")
    if tail_steps < 1:
        raise ValueError(f"tail_steps must be >= 1, got {tail_steps}")
    prefix = process.timesteps(prefix_steps, start, mid) if prefix_steps else (start,)
    return FluxPlan(t_mid=mid, prefix=prefix, tail=process.timesteps(tail_steps, mid))


def full_plan(process: DiffusionProcess, steps: int) -> FluxPlan:
    """The whole sampler as a tail from pure noise (`steps` calls)."""
    return FluxPlan(t_mid=process.start_time, prefix=(process.start_time,), tail=process.timesteps(steps))


def sampler_hash(process: DiffusionProcess, plan: FluxPlan) -> str:
    """What a midpoint depends on besides the weights and the seed: the process (objective,
    schedule, sampler) and the prefix (16 hex digits). The tail is free to change."""
    spec = process.spec() | {"prefix": list(plan.prefix)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def scene_noise(shape: tuple[int, ...], scene_ids: Sequence[int], seed: int) -> torch.Tensor:
    """Start latents `[B, *shape]`, row i drawn from its own generator keyed by (seed, scene_ids[i]),
    so a scene's midpoint does not depend on which scenes share its batch."""
    rows = [torch.randn(shape, generator=seeded_generator(seed * 1_000_003 + int(scene))) for scene in scene_ids]
    return torch.stack(rows)


def stage1_midpoint(model: LatentDiffusion, cond: torch.Tensor, plan: FluxPlan, x_start: torch.Tensor, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Pure-noise start latent `[B, 3, h, w]` -> x_{t_mid} under `cond` `[B, C, H, W]` (usually
    the static condition), on the model's device. `generator` feeds a stochastic sampler; a
    deterministic one draws nothing."""
    cond, x_start = cond.to(model.device), x_start.to(model.device)
    with torch.no_grad(), model.autocast():
        return sample_loop(model.process, model.denoise_fn(cond), x_start, plan.prefix, generator=generator)


def stage2_latent(model: LatentDiffusion, midpoint: torch.Tensor, cond: torch.Tensor, plan: FluxPlan, *,
                  generator: torch.Generator | None = None, denoise_fn: DenoiseFn | None = None) -> torch.Tensor:
    """x_{t_mid} `[B, 3, h, w]` -> clean scaled latent under the full `cond`, on the model's
    device. `denoise_fn` replaces the model's own network, e.g. by a tail fine-tuned for this
    split (it gets tensors on the model's device and runs under the model's autocast)."""
    cond, midpoint = cond.to(model.device), midpoint.to(model.device)
    own = model.denoise_fn(cond)
    network = own if denoise_fn is None else (lambda x, t: denoise_fn(x, t).float())
    with torch.no_grad(), model.autocast():
        return sample_loop(model.process, network, midpoint, plan.tail, generator=generator)


def stage2_decode(model: LatentDiffusion, midpoint: torch.Tensor, cond: torch.Tensor, plan: FluxPlan, *,
                  generator: torch.Generator | None = None, denoise_fn: DenoiseFn | None = None) -> torch.Tensor:
    """Stage 2 and the VAE decode: gain maps `[B, 1, H, W]` in [0, 1], 0 on buildings."""
    latent = stage2_latent(model, midpoint, cond, plan, generator=generator, denoise_fn=denoise_fn)
    with torch.no_grad(), model.autocast():
        return model.decode(latent, cond[:, 0].to(model.device))


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
