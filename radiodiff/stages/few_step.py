"""tune_few_step: the control of the Flux tail's fine-tuning. A copy of a denoiser gets the
same extra training as the tail (`flux.tail_tune`: steps, batch, optimiser) but on its own
sampler at the served tail's network calls (`flux.tail_steps`), from pure noise instead of
from a bank midpoint, so evaluate can say how
much of Flux's gain over DDIM-1 (decoupled-1, flow-1) is the cached midpoint and how much is the
extra training.

The construction is the tail's with the midpoint at the start of the process: x_T is fresh
noise, half the training times sit at the sampler's first (and, for one step, only) time, the
rest uniform on the path to the clean end, each with the process's own loss (v, kc or flow).
With `tail_tune.loss: decoded` it is the tail's decoded loss, from fresh noise: the sampler's
`tail_steps` calls and the VAE decoder, scored by NMSE against the map.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from radiodiff.artifacts.files import file_digest
from radiodiff.config import ConditionConfig, FluxConfig
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.flux import full_plan, scene_noise, stage2_decode
from radiodiff.generation import LatentDiffusion
from radiodiff.metrics import nmse
from radiodiff.options import Augmentation, TailLoss
from radiodiff.stages.common import batched, dataset_digest, run_folder
from radiodiff.stages.latents import train_latents
from radiodiff.stages.tail import VAL_MAPS, decoded_nmse_loss, draw_path_times, plus_path_loss
from radiodiff.training.batching import loader_factory
from radiodiff.training.loop import TrainResult, train_loop

KIND = "few_step"  # names its resume folders


def _loss_fn(model: LatentDiffusion):
    """The process's loss on the sampler's path from pure noise at its start time to x0."""
    process = model.process
    start = torch.tensor(process.start_time, device=model.device)

    def loss_fn(unet, batch, step, generator):
        x0, cond = batch["latent"], batch["cond"]
        noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype)
        t = draw_path_times(process, start.expand(x0.shape[0]), generator)
        x_t = process.add_noise(x0, noise, t)
        return process.training_loss(unet(x_t, t, cond), x0=x0, noise=noise, t=t, x_t=x_t), {}

    return loss_fn


def _decoded_loss_fn(model: LatentDiffusion, steps: int, path_loss_weight: float = 0.0):
    """The decoded NMSE of the `steps`-call sampler from fresh noise (the tail's decoded loss
    with the midpoint at pure noise), plus `path_loss_weight` times the path loss (`_loss_fn`)."""
    times = full_plan(model.process, steps).tail
    path_loss = _loss_fn(model) if path_loss_weight else None
    model.vae.requires_grad_(False)

    def loss_fn(unet, batch, step, generator):
        shape = batch["latent"].shape
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=batch["latent"].dtype)
        loss = decoded_nmse_loss(model, unet, noise, times, batch["cond"], batch["gain"])
        return plus_path_loss(loss, path_loss, path_loss_weight, unet, batch, step, generator)

    return loss_fn


def _val_fn(model: LatentDiffusion, val: RadioMapDataset, seed: int, steps: int):
    """NMSE of the `steps`-step sampler from the seeded scene noise on the first validation
    maps (the start latents evaluate uses)."""
    plan = full_plan(model.process, steps)
    batch = next(iter(batched(val, VAL_MAPS)))
    cond, gain = batch["cond"].to(model.device), batch["gain"]
    x_start = scene_noise(model.latent_shape(cond)[1:], batch["map_id"].tolist(), seed).to(model.device)

    def val_fn(net, step):
        pred = stage2_decode(model, x_start, cond, plan, denoise_fn=lambda x, t: net(x, t, cond))
        return {f"{model.process.name}_{steps}_nmse": float(nmse(pred.float().cpu(), gain).mean())}

    return val_fn


def train_few_step(model: LatentDiffusion, cfg: FluxConfig, condition: ConditionConfig, *, ldm_path: Path,
                   dataset_dir: Path, work_dir: Path, log, progress: bool = True) -> TrainResult:
    """Fine-tune a copy of `model.unet` on the path of its sampler at `cfg.tail_steps` steps
    with the tail's settings (`cfg.tail_tune`)."""
    digest = dataset_digest(dataset_dir)
    latents = train_latents(model, dataset_dir, condition.encodings, Augmentation.NONE, work_dir, dataset_key=digest)
    tune = cfg.tail_tune
    loss_fn = (_decoded_loss_fn(model, cfg.tail_steps, tune.path_loss_weight) if tune.loss is TailLoss.DECODED
               else _loss_fn(model))
    return train_loop(
        model=copy.deepcopy(model.unet).train(), config=tune.train, log=log, progress=progress,
        loss_fn=loss_fn,
        val_fn=_val_fn(model, RadioMapDataset(dataset_dir, "val", condition.encodings), cfg.seeds[0], cfg.tail_steps),
        batches=loader_factory(latents, batch_size=tune.batch_size, seed=tune.train.seed, num_workers=0,
                               device=model.device),
        checkpoint_dir=run_folder(work_dir, KIND, tune, cfg.tail_steps, condition, digest,
                                  file_digest(ldm_path)),
        name=f"tune_few_step_{model.process.name}",
    )
