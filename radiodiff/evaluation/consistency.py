"""The paper's key observation, checked on our data: along the reverse trajectory, latents of one
scene under different Tx stay alike far longer than latents of different scenes.

All maps start from one shared noise latent and run DDIM under their full condition; at each
step, the mean cosine similarity of latent pairs is taken within scenes (different Tx) and
across scenes.
"""

from __future__ import annotations

import functools

import torch

from radiodiff.diffusion.sampling import ddim_step, ddim_timesteps, sample_loop_progressive
from radiodiff.generation import LatentDiffusion
from radiodiff.training.rng import seeded_generator


def pair_similarity(latents: torch.Tensor, scenes: torch.Tensor) -> tuple[float, float]:
    """Mean cosine similarity of (same-scene, different-scene) pairs of `latents` `[N, ...]`."""
    flat = torch.nn.functional.normalize(latents.flatten(1).double(), dim=1)
    cosine = flat @ flat.T
    same = scenes[:, None] == scenes[None, :]
    off_diagonal = ~torch.eye(len(scenes), dtype=torch.bool)
    return float(cosine[same & off_diagonal].mean()), float(cosine[~same].mean())


def trajectory_similarity(model: LatentDiffusion, cond: torch.Tensor, scenes: list[int], *, steps: int,
                          seed: int) -> list[dict[str, float]]:
    """Rows {t, same_scene, other_scene} for every DDIM-`steps` step (t = the step landed on)."""
    timesteps = ddim_timesteps(model.schedule.num_steps, steps)
    shared = torch.randn(model.latent_shape(cond)[1:], generator=seeded_generator(seed))
    x_start = shared.expand(len(cond), *shared.shape).contiguous()
    step = functools.partial(ddim_step, schedule=model.schedule, prediction=model.prediction)
    ids = torch.tensor(scenes)
    rows = []
    outputs = sample_loop_progressive(model.denoise_fn(cond), x_start, timesteps, step)
    for index, output in enumerate(outputs):
        landed = int(timesteps[index + 1]) if index + 1 < len(timesteps) else -1
        same, other = pair_similarity(output.prev_sample, ids)
        rows.append({"t": landed, "same_scene": same, "other_scene": other})
    return rows
