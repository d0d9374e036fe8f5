"""train_ldm: RadioDiff's conditional denoiser on the VAE latent, with condition dropout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from radiodiff.config import ConditionConfig, LDMConfig
from radiodiff.data.conditions import dynamic_channel_mask
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.diffusion.decoupled import (
    TIME_EMBEDDING_SCALE, decoupled_loss, precondition, q_sample_decoupled, sample_times,
)
from radiodiff.diffusion.losses import diffusion_loss, drop_condition_channels, q_sample, sample_timesteps
from radiodiff.diffusion.schedule import make_schedule
from radiodiff.generation import LatentDiffusion, generate
from radiodiff.flux import static_condition
from radiodiff.metrics import summarize, tx_response_ratio
from radiodiff.models.unet import ConditionalUNet
from radiodiff.stages.common import batched, dataset_digest, file_digest, load_model_file, predict_all, run_folder, save_model
from radiodiff.stages.figures import comparison_figure, spread_indices
from radiodiff.stages.vae import load_vae
from radiodiff.training.batching import loader_factory
from radiodiff.training.loop import StopFn, train_loop
from radiodiff.training.rng import seeded_generator, seeded_init

KIND = "ldm"
EVAL_BATCH = 64
VAL_SAMPLES = 64  # the first validation maps, all their Tx: enough to measure the Tx response
EVAL_SEED = 1234


def build_unet(cfg: LDMConfig, cond_channels: int, latent_channels: int = 3) -> ConditionalUNet:
    """The denoiser described by `cfg` for a condition of `cond_channels` channels."""
    unet = cfg.unet
    return ConditionalUNet(latent_channels=latent_channels, cond_channels=cond_channels,
                           base_channels=unet.base_channels, channel_mults=unet.channel_mults,
                           num_res_blocks=unet.num_res_blocks, cond_base_channels=unet.cond_base_channels,
                           attention=unet.attention, window_size=unet.window_size, fft_filter=unet.fft_filter,
                           dropout=unet.dropout, two_heads=unet.two_heads,
                           time_scale=TIME_EMBEDDING_SCALE if cfg.diffusion.prediction.continuous else 1.0)


class LatentDataset(torch.utils.data.Dataset):
    """A `RadioMapDataset` whose items also carry the sample's scaled VAE latent `[3, h, w]`."""

    def __init__(self, base: RadioMapDataset, latents: torch.Tensor) -> None:
        self.base, self.latents = base, latents

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int) -> dict:
        return {**self.base[item], "latent": self.latents[item]}


def encode_dataset(model: LatentDiffusion, dataset: RadioMapDataset) -> torch.Tensor:
    """Scaled posterior-mode latents of every sample, `[N, 3, h, w]` (computed once, not per epoch)."""
    with torch.no_grad():
        return torch.cat([model.encode(batch["gain"]) for batch in batched(dataset, EVAL_BATCH)])


@dataclass(frozen=True)
class LDMResult:
    """Trained (EMA) denoiser bundled for sampling, test metrics and a figure."""

    model: LatentDiffusion
    metrics: dict[str, float]
    figure: Any


def _loss_fn(cfg: LDMConfig, schedule, channel_mask):
    if cfg.diffusion.prediction.continuous:
        return _decoupled_loss_fn(cfg, channel_mask)

    def loss_fn(unet, batch, step, generator):
        z0, cond = batch["latent"], batch["cond"]
        t = sample_timesteps(z0.shape[0], schedule, generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        cond = drop_condition_channels(cond, channel_mask, cfg.condition_dropout, generator)
        output = unet(q_sample(z0, t, noise, schedule), t, cond)
        return diffusion_loss(output, z0, noise, t, schedule, cfg.diffusion.prediction), {}

    return loss_fn


def _decoupled_loss_fn(cfg: LDMConfig, channel_mask):
    """RadioDiff's objective: continuous t, x_t = (1 - t) x0 + sqrt(t) noise, two preconditioned heads."""
    def loss_fn(unet, batch, step, generator):
        z0, cond = batch["latent"], batch["cond"]
        t = sample_times(z0.shape[0], generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        cond = drop_condition_channels(cond, channel_mask, cfg.condition_dropout, generator)
        x_t = q_sample_decoupled(z0, t, noise)
        c_pred, noise_pred = precondition(unet(x_t, t, cond).float(), x_t, t, cfg.diffusion.preconditioning)
        return decoupled_loss(c_pred, noise_pred, z0, noise, t), {}

    return loss_fn


def sample_metrics(model: LatentDiffusion, dataset, steps: int, limit: int | None = None, *,
                   static: bool = False) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """DDIM-`steps` samples over a dataset (seeded): NMSE/RMSE/SSIM/PSNR and the Tx-response ratio.
    `static=True` samples with every dynamic channel zeroed (what the model knows without the Tx)."""
    generator = seeded_generator(EVAL_SEED)
    mask = dynamic_channel_mask(dataset.encodings)

    def predict(batch):
        cond = static_condition(batch["cond"], mask) if static else batch["cond"]
        return generate(model, cond, steps=steps, generator=generator)

    pred, target, maps = predict_all(predict, dataset, EVAL_BATCH, limit)
    metrics = summarize(pred, target)
    metrics["tx_response"] = tx_response_ratio(pred, target, maps)
    return metrics, pred, target


def train_ldm(cfg: LDMConfig, condition: ConditionConfig, *, dataset_dir: Path, vae_path: Path, work_dir: Path,
              log, progress: bool = True, should_stop: StopFn | None = None) -> LDMResult:
    """Train the denoiser on pre-encoded train latents (resumable), then sample the test split.
    `should_stop(step, val_metrics)` runs after each validation (Optuna's pruning hook)."""
    vae, scale = load_vae(vae_path)
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.num_steps)
    with seeded_init(cfg.train.seed):
        unet = build_unet(cfg, condition.channels, vae.latent_channels)
    bundle = lambda net: LatentDiffusion(net, vae, schedule, cfg.diffusion.prediction, scale,  # noqa: E731
                                         cfg.diffusion.preconditioning)
    train = RadioMapDataset(dataset_dir, "train", condition.encodings)
    latents = LatentDataset(train, encode_dataset(bundle(unet), train))
    val = RadioMapDataset(dataset_dir, "val", condition.encodings)

    def val_fn(current, step):
        return sample_metrics(bundle(current), val, cfg.sample_steps, VAL_SAMPLES)[0]

    result = train_loop(
        model=unet, loss_fn=_loss_fn(cfg, schedule, dynamic_channel_mask(condition.encodings)), config=cfg.train,
        log=log, val_fn=val_fn, progress=progress, should_stop=should_stop,
        batches=loader_factory(latents, batch_size=cfg.data.batch_size, seed=cfg.train.seed,
                               num_workers=cfg.data.workers),
        checkpoint_dir=run_folder(work_dir, KIND, cfg, condition, dataset_digest(dataset_dir), file_digest(vae_path)),
    )
    model = bundle(result.ema.ema_model.eval())
    test = RadioMapDataset(dataset_dir, "test", condition.encodings)
    metrics, pred, target = sample_metrics(model, test, cfg.sample_steps)
    static, _, _ = sample_metrics(model, test, cfg.sample_steps, static=True)
    out = {f"test_{k}": v for k, v in metrics.items()}
    out.update({f"test_static_{k}": static[k] for k in ("nmse", "tx_response")})
    out.update(steps_per_s=result.steps_per_s, train_seconds=result.wall_time_s)
    shown = spread_indices(len(test))
    cond = torch.stack([test[i]["cond"] for i in shown])
    figure = comparison_figure(target[shown], {f"DDIM-{cfg.sample_steps}": pred[shown]}, cond=cond,
                               title="LDM test samples")
    return LDMResult(model, out, figure)


def save_ldm(path: Path, result: LDMResult, cfg: LDMConfig, condition: ConditionConfig, vae_path: Path) -> None:
    """Write the final denoiser file (EMA weights, configs, the digest of the VAE it was trained on)."""
    save_model(path, kind=KIND, state_dict=result.model.unet.state_dict(),
               config={"ldm": cfg, "condition": condition}, extra={"vae_digest": file_digest(vae_path)})


def load_ldm(path: Path, vae_path: Path) -> tuple[LatentDiffusion, LDMConfig, ConditionConfig]:
    """Rebuild the sampling bundle from the files of `save_ldm` and `save_vae`."""
    from radiodiff.errors import UserError
    from radiodiff.typed_yaml import build

    payload = load_model_file(path, KIND)
    if payload["extra"]["vae_digest"] != file_digest(vae_path):
        raise UserError(f"{path} was trained on another VAE than {vae_path}")
    cfg = build(LDMConfig, payload["config"]["ldm"], where=f"{path}:ldm")
    condition = build(ConditionConfig, payload["config"]["condition"], where=f"{path}:condition")
    vae, scale = load_vae(vae_path)
    unet = build_unet(cfg, condition.channels, vae.latent_channels)
    unet.load_state_dict(payload["state_dict"])
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.num_steps)
    model = LatentDiffusion(unet.eval(), vae, schedule, cfg.diffusion.prediction, scale, cfg.diffusion.preconditioning)
    return model, cfg, condition
