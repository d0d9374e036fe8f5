"""tune_tail: dynamic conditional fine-tuning of the Flux tail (RadioDiff-Flux's third ingredient).

A static midpoint z_mid of scene s carries the layout but no Tx. For a training sample of s
with clean latent x0, the noise that z_mid implies is

    eps_hat = (z_mid - sqrt(ab_mid) x0) / sqrt(1 - ab_mid),

and the deterministic (DDIM) path from z_mid to x0 is x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps_hat
for t <= t_mid. A copy of the denoiser is trained on points of that path, with the sample's
full condition: at t = t_mid its input is the shared static midpoint itself, so it learns to
move a Tx-free midpoint to that Tx's map. The copy only ever runs the tail.

A decoupled (kc) model has the same construction on continuous time: z_mid = (1 - t_mid) x0
+ sqrt(t_mid) n_hat gives n_hat, the path is x_t = (1 - t) x0 + sqrt(t) n_hat (its eta = 0
sampler's path), and the heads are trained towards C = -x0 and n_hat with RadioDiff's loss.
Flow matching likewise: z_mid = (1 - t_mid) x0 + t_mid n_hat, the path x_t = (1 - t) x0 + t n_hat
(its Euler sampler's), the velocity target n_hat - x0.

With `tail_tune.loss: decoded` the copy is trained on the served plan itself instead: the
static midpoint at the served t_mid, the tail's `tail_steps` calls and the VAE decoder, scored
by NMSE against the sample's map. The path loss asks every point of the path for its latent
target, weighing latent channels alike; the decoded loss asks only for the map the query
returns, with each map's error over its energy, as evaluate scores it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from radiodiff.artifacts.files import file_digest
from radiodiff.artifacts.keys import bank_key
from radiodiff.bank import MidpointBank
from radiodiff.config import ConditionConfig, FluxConfig
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.diffusion.process import DiffusionProcess
from radiodiff.diffusion.sampling import sample_loop
from radiodiff.errors import UserError
from radiodiff.flux import flux_plan, scene_noise, stage1_midpoint, stage2_decode, static_conditions
from radiodiff.generation import LatentDiffusion
from radiodiff.metrics import nmse
from radiodiff.options import Augmentation, TailLoss
from radiodiff.stages.bank import load_scenes
from radiodiff.stages.common import batched, dataset_digest, run_folder
from radiodiff.stages.latents import train_latents
from radiodiff.training.batching import loader_factory
from radiodiff.training.loop import TrainResult, train_loop

KIND = "flux_tail"  # names its resume folders
VAL_MAPS = 64


def bank_midpoints(model: LatentDiffusion, ldm_path: Path, bank_dir: Path, cfg: FluxConfig,
                   scene_ids: np.ndarray) -> torch.Tensor:
    """Static midpoints `[len(t_mids), len(seeds), S, 3, h, w]` of `scene_ids`, read from the bank."""
    out = torch.empty(0)
    for i, t_mid in enumerate(cfg.t_mids):
        bank = MidpointBank(bank_dir, bank_key(model, ldm_path, cfg, t_mid))
        for j, seed in enumerate(cfg.seeds):
            for k, scene in enumerate(scene_ids):
                latent = bank.get(int(scene), seed=seed)
                if latent is None:
                    raise UserError(f"{bank_dir}: no midpoint of scene {scene} (t_mid {t_mid}, seed {seed});"
                                    " run build_bank over the train split first")
                if out.numel() == 0:
                    out = torch.empty((len(cfg.t_mids), len(cfg.seeds), len(scene_ids), *latent.shape))
                out[i, j, k] = torch.from_numpy(latent)
    return out


def draw_path_times(process: DiffusionProcess, t_mid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half the draws at t_mid itself (the first tail step, which sees z_mid as is), the rest
    uniform on the remaining path from t_mid to the clean end (on the generator's device)."""
    size, device = t_mid.shape[0], generator.device
    later = process.times_on_path(torch.rand(size, generator=generator, device=device), t_mid)
    return torch.where(torch.rand(size, generator=generator, device=device) < 0.5, t_mid, later)


def decoded_nmse_loss(model: LatentDiffusion, unet: torch.nn.Module, x_start: torch.Tensor, times: tuple,
                      cond: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Mean NMSE (scalar, with autograd) of the maps `unet` makes by running the model's sampler
    from `x_start` `[B, 3, h, w]` over `times` under `cond` `[B, C, H, W]`, decoded by the model's
    VAE, against `gain` `[B, 1, H, W]`. The gradient reaches `unet` through every sampler step
    and the decoder, so a few-call sampler is trained on exactly what evaluate scores; the
    caller freezes the VAE (its weights get gradients otherwise)."""
    latent = sample_loop(model.process, lambda x_t, t: unet(x_t, t, cond).float(), x_start, times, grad=True)
    return nmse(model.decode(latent, cond[:, 0]), gain).mean()


def plus_path_loss(loss: torch.Tensor, path_loss, weight: float, unet, batch: dict, step: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """A decoded `loss` plus `weight` times `path_loss` (a loss function of the train loop's
    form) on the same batch, with both parts to log; the decoded loss alone without one."""
    if path_loss is None:
        return loss, {}
    path, _ = path_loss(unet, batch, step, generator)
    return loss + weight * path, {"decoded_loss": float(loss.detach()), "path_loss": float(path.detach())}


def _pick_midpoints(batch: dict, generator: torch.Generator, t_mids: torch.Tensor, midpoints: torch.Tensor,
                    scene_row: dict[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's static midpoint of its own scene at a random t_mid and seed:
    (z_mid `[B, 3, h, w]`, t_mid `[B]` in the model's kind of time). `midpoints`, `t_mids` and
    the generator live on the training device."""
    size, device = batch["cond"].shape[0], generator.device
    which = torch.randint(0, midpoints.shape[0], (size,), generator=generator, device=device)
    seed = torch.randint(0, midpoints.shape[1], (size,), generator=generator, device=device)
    rows = torch.tensor([scene_row[m] for m in batch["map_id"].tolist()], device=device)
    return midpoints[which, seed, rows], t_mids[which]


def _loss_fn(model: LatentDiffusion, cfg: FluxConfig, midpoints: torch.Tensor, scene_row: dict[int, int]):
    """The process's training loss on the path from each sample's static midpoint z_mid to its
    clean latent x0: the noise z_mid implies at t_mid puts every point of that path at x0."""
    process = model.process
    midpoints = midpoints.to(model.device)
    t_mids = torch.tensor([process.config_time(t) for t in cfg.t_mids], device=model.device)

    def loss_fn(unet, batch, step, generator):
        x0, cond = batch["latent"], batch["cond"]
        z_mid, t_mid = _pick_midpoints(batch, generator, t_mids, midpoints, scene_row)
        t = draw_path_times(process, t_mid, generator)
        noise = process.implied_noise(z_mid, x0, t_mid)
        x_t = process.add_noise(x0, noise, t)
        return process.training_loss(unet(x_t, t, cond), x0=x0, noise=noise, t=t, x_t=x_t), {}

    return loss_fn


def _decoded_loss_fn(model: LatentDiffusion, cfg: FluxConfig, midpoints: torch.Tensor, scene_row: dict[int, int]):
    """The served plan's decoded NMSE: each sample's static midpoint at the served t_mid (a random
    seed of the bank's) through the tail's `tail_steps` calls and the frozen VAE decoder; plus
    `tail_tune.path_loss_weight` times the path loss (`_loss_fn`) at every t_mid."""
    served = cfg.t_mids.index(cfg.t_mid)
    served_midpoints = midpoints[served:served + 1].to(model.device)
    t_mids = torch.tensor([model.process.config_time(cfg.t_mid)], device=model.device)
    times = flux_plan(model.process, cfg.t_mid, cfg.prefix_steps, cfg.tail_steps).tail
    weight = cfg.tail_tune.path_loss_weight
    path_loss = _loss_fn(model, cfg, midpoints, scene_row) if weight else None
    model.vae.requires_grad_(False)

    def loss_fn(unet, batch, step, generator):
        z_mid, _ = _pick_midpoints(batch, generator, t_mids, served_midpoints, scene_row)
        loss = decoded_nmse_loss(model, unet, z_mid, times, batch["cond"], batch["gain"])
        return plus_path_loss(loss, path_loss, weight, unet, batch, step, generator)

    return loss_fn


def _val_fn(model: LatentDiffusion, cfg: FluxConfig, val: RadioMapDataset):
    """NMSE of Flux (t_mid = cfg.t_mid, seed of cfg.seeds[0]) on the first validation maps."""
    plan = flux_plan(model.process, cfg.t_mid, cfg.prefix_steps, cfg.tail_steps)
    batch = next(iter(batched(val, VAL_MAPS)))
    cond, gain = batch["cond"].to(model.device), batch["gain"]
    static = static_conditions(batch["cond"][:, 0].numpy() > 0, cond.shape[1])
    x_start = scene_noise(model.latent_shape(cond)[1:], batch["map_id"].tolist(), cfg.seeds[0])
    midpoint = stage1_midpoint(model, static, plan, x_start)

    def val_fn(net, step):
        pred = stage2_decode(model, midpoint, cond, plan, denoise_fn=lambda x, t: net(x, t, cond))
        return {"flux_nmse": float(nmse(pred.float().cpu(), gain).mean())}

    return val_fn


def train_tail(model: LatentDiffusion, cfg: FluxConfig, condition: ConditionConfig, *, ldm_path: Path,
               dataset_dir: Path, bank_dir: Path, work_dir: Path, log, progress: bool = True) -> TrainResult:
    """Fine-tune a copy of `model.unet` on the tails of the train split's bank midpoints."""
    scene_ids = load_scenes(dataset_dir, ["train"]).ids
    midpoints = bank_midpoints(model, ldm_path, bank_dir, cfg, scene_ids)
    digest = dataset_digest(dataset_dir)
    latents = train_latents(model, dataset_dir, condition.encodings, Augmentation.NONE, work_dir, dataset_key=digest)
    tune = cfg.tail_tune
    make_loss = _decoded_loss_fn if tune.loss is TailLoss.DECODED else _loss_fn
    return train_loop(
        model=copy.deepcopy(model.unet).train(), config=tune.train, log=log, progress=progress,
        loss_fn=make_loss(model, cfg, midpoints, {int(s): i for i, s in enumerate(scene_ids)}),
        val_fn=_val_fn(model, cfg, RadioMapDataset(dataset_dir, "val", condition.encodings)),
        batches=loader_factory(latents, batch_size=tune.batch_size, seed=tune.train.seed, num_workers=0,
                               device=model.device),
        checkpoint_dir=run_folder(work_dir, KIND, cfg, condition, digest,
                                  file_digest(ldm_path)),
        name="tune_tail",
    )
