"""The paper's key observation, checked on our data: along the reverse trajectory, latents of one
scene under different Tx stay alike far longer than latents of different scenes.

All maps start from one shared noise latent and run the model's sampler under their full
condition; at each step, the mean cosine similarity of latent pairs is taken within scenes
(different Tx) and across scenes.
"""

from __future__ import annotations

import torch

from radiodiff.diffusion.sampling import sample_loop_progressive
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
    """Rows {t, same_scene, other_scene} for every step of a `steps`-step sampler of the
    model's process (t = the time the step landed on, in the process's own time)."""
    times = model.process.timesteps(steps)
    shared = torch.randn(model.latent_shape(cond)[1:], generator=seeded_generator(seed))
    x_start = shared.expand(len(cond), *shared.shape).contiguous().to(model.device)
    cond = cond.to(model.device)
    ids = torch.tensor(scenes)
    rows = []
    with model.autocast():
        trajectory = list(sample_loop_progressive(model.process, model.denoise_fn(cond), x_start, times))
    for index, output in enumerate(trajectory):
        same, other = pair_similarity(output.prev_sample.cpu(), ids)
        rows.append({"t": times[index + 1], "same_scene": same, "other_scene": other})
    return rows
