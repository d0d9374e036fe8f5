"""train_vae: the KL autoencoder of RadioDiff's first stage, on gain maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from radiodiff.artifacts.vae import build_vae
from radiodiff.config import VAEConfig
from radiodiff.data.augment import augmented
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.data.scaling import to_gain, to_model_scale
from radiodiff.devices import device_name, module_device, resolve_device
from radiodiff.metrics import summarize
from radiodiff.models.vae import AutoencoderKL
from radiodiff.models.vae_loss import estimate_scale_factor, vae_loss
from radiodiff.stages.common import batched, dataset_digest, predict_all, run_folder
from radiodiff.stages.figures import comparison_figure, spread_indices
from radiodiff.training.batching import loader_factory
from radiodiff.training.loop import train_loop
from radiodiff.training.rng import seeded_init

KIND = "vae"  # names its resume folders
EVAL_BATCH = 64


@dataclass(frozen=True)
class VAEResult:
    """Trained (EMA) autoencoder, its latent scale factor, test metrics and a figure."""

    model: AutoencoderKL
    scale_factor: float
    metrics: dict[str, float]
    figure: Any


def _loss_fn(cfg: VAEConfig):
    def loss_fn(model, batch, step, generator):
        x = to_model_scale(batch["gain"])
        recon, posterior = model(x, generator=generator)
        free = 1.0 - batch["cond"][:, :1]  # building pixels are zeroed from the layout at decode time
        total, parts = vae_loss(recon, x, posterior, kl_weight=cfg.kl_weight, recon_kind=cfg.recon_loss,
                                pixel_weight=free)
        return total, {name: float(value) for name, value in parts.items()}

    return loss_fn


def reconstruct(model: AutoencoderKL, batch: dict) -> torch.Tensor:
    """Posterior-mode reconstruction of a batch's gain, `[B, 1, H, W]` in [0, 1]."""
    return to_gain(model.decode(model.encode(to_model_scale(batch["gain"])).mode()), batch["cond"][:, 0])


def train_vae(cfg: VAEConfig, *, dataset_dir: Path, work_dir: Path, log, progress: bool = True) -> VAEResult:
    """Train on the train split (resuming from `work_dir` if interrupted) on the device of
    `cfg.train.device`, pick the EMA weights, estimate the latent scale, and measure
    reconstruction on the test split."""
    device = resolve_device(cfg.train.device)
    train = RadioMapDataset(dataset_dir, "train", ())
    val = RadioMapDataset(dataset_dir, "val", ())
    with seeded_init(cfg.train.seed):
        model = build_vae(cfg, device)

    def val_fn(current, step):
        pred, target, _ = predict_all(lambda b: reconstruct(current, b), val, EVAL_BATCH, limit=256, device=device)
        return summarize(pred, target)

    result = train_loop(
        model=model, loss_fn=_loss_fn(cfg), config=cfg.train, log=log, val_fn=val_fn, progress=progress,
        batches=loader_factory(augmented(train, cfg.data.augment), batch_size=cfg.data.batch_size,
                               seed=cfg.train.seed, num_workers=cfg.data.workers, device=device),
        checkpoint_dir=run_folder(work_dir, KIND, cfg, dataset_digest(dataset_dir)), name="train_vae",
    )
    trained = result.ema.ema_model.eval()
    scale = latent_scale(trained, train)
    test = RadioMapDataset(dataset_dir, "test", ())
    pred, target, _ = predict_all(lambda b: reconstruct(trained, b), test, EVAL_BATCH, device=device)
    metrics = {f"test_{k}": v for k, v in summarize(pred, target).items()}
    metrics.update(scale_factor=scale, steps_per_s=result.steps_per_s, train_seconds=result.train_seconds,
                   device=device_name(device))
    shown = spread_indices(len(target))
    figure = comparison_figure(target[shown], {"reconstruction": pred[shown]}, title="VAE test reconstructions")
    return VAEResult(trained, scale, metrics, figure)


def latent_scale(model: AutoencoderKL, dataset, limit: int = 512) -> float:
    """RadioDiff's scale_by_std: 1 / std of posterior-mode latents of up to `limit` samples."""
    device = module_device(model)
    with torch.no_grad():
        latents = [model.encode(to_model_scale(b["gain"])).mode().float().cpu()
                   for b in batched(dataset, EVAL_BATCH, limit, device)]
    return estimate_scale_factor(torch.cat(latents))


class Reconstruct(torch.nn.Module):
    """The MLflow model view of the VAE: gain `[B, 1, H, W]` in [0, 1] -> its reconstruction
    (posterior mode), same shape."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, gain: torch.Tensor) -> torch.Tensor:
        return to_gain(self.vae.decode(self.vae.encode(to_model_scale(gain)).mode()))
