"""train_ldm: RadioDiff's conditional denoiser on the VAE latent, with condition dropout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from radiodiff.artifacts.denoiser import build_unet
from radiodiff.artifacts.files import file_digest
from radiodiff.artifacts.vae import load_vae
from radiodiff.config import ConditionConfig, LDMConfig
from radiodiff.data.conditions import dynamic_channel_mask
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.diffusion.discrete import min_snr_weighting
from radiodiff.diffusion.losses import drop_condition_channels, energy_weights, traffic_weights
from radiodiff.devices import device_name, resolve_device
from radiodiff.diffusion.process import DiffusionProcess, make_process
from radiodiff.flux import static_condition
from radiodiff.generation import LatentDiffusion, generate
from radiodiff.metrics import summarize, tx_response_ratio
from radiodiff.options import LossWeighting
from radiodiff.stages.common import dataset_digest, predict_all, run_folder
from radiodiff.stages.figures import comparison_figure, spread_indices
from radiodiff.stages.latents import train_latents
from radiodiff.training.batching import loader_factory
from radiodiff.training.loop import StopFn, train_loop
from radiodiff.training.rng import seeded_generator, seeded_init

KIND = "ldm"  # names its resume folders
EVAL_BATCH = 64
VAL_SAMPLES = 64  # the first validation maps, all their Tx: enough to measure the Tx response
EVAL_SEED = 1234


@dataclass(frozen=True)
class LDMResult:
    """Trained (EMA) denoiser bundled for sampling, test metrics and a figure."""

    model: LatentDiffusion
    metrics: dict[str, float]
    figure: Any


def denoiser_loss(process: DiffusionProcess, condition_dropout: float, channel_mask: tuple[bool, ...],
                  weighting: LossWeighting = LossWeighting.NONE):
    """The process's training loss at random times, with the dynamic channels dropped from a
    `condition_dropout` share of the batch (so one network also serves the static prefix),
    each map weighted as `weighting` says."""
    time_weights = min_snr_weighting(process) if weighting is LossWeighting.MIN_SNR else None

    def loss_fn(unet, batch, step, generator):
        z0, cond = batch["latent"], batch["cond"]
        t = process.sample_training_times(z0.shape[0], generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        cond = drop_condition_channels(cond, channel_mask, condition_dropout, generator)
        x_t = process.add_noise(z0, noise, t)
        weight = loss_weights(weighting, batch) if time_weights is None else time_weights(t)
        return process.training_loss(unet(x_t, t, cond), x0=z0, noise=noise, t=t, x_t=x_t, weight=weight), {}

    return loss_fn


def loss_weights(weighting: LossWeighting, batch: dict) -> torch.Tensor | None:
    """The per-map loss weights [B] of a training batch under a map weighting (None: all equal;
    min-SNR weighs by time, in `denoiser_loss`)."""
    if weighting is LossWeighting.ENERGY:
        return energy_weights(batch["gain"])
    if weighting is LossWeighting.TRAFFIC:
        return traffic_weights(torch.as_tensor(batch["cars"], device=batch["gain"].device))
    return None


def sample_metrics(model: LatentDiffusion, dataset, steps: int, limit: int | None = None, *,
                   static: bool = False) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """DDIM-`steps` samples over a dataset (seeded): NMSE/RMSE/SSIM/PSNR and the Tx-response ratio.
    `static=True` samples with every dynamic channel zeroed (what the model knows without the Tx)."""
    generator = seeded_generator(EVAL_SEED)
    mask = dynamic_channel_mask(dataset.encodings)

    def predict(batch):
        cond = static_condition(batch["cond"], mask) if static else batch["cond"]
        return generate(model, cond, steps=steps, generator=generator)

    pred, target, maps = predict_all(predict, dataset, EVAL_BATCH, limit, device=model.device)
    metrics = summarize(pred, target)
    metrics["tx_response"] = tx_response_ratio(pred, target, maps)
    return metrics, pred, target


def train_ldm(cfg: LDMConfig, condition: ConditionConfig, *, dataset_dir: Path, vae_path: Path, work_dir: Path,
              log, progress: bool = True, should_stop: StopFn | None = None) -> LDMResult:
    """Train the denoiser on pre-encoded train latents (resumable), then sample the test split.
    `should_stop(step, val_metrics)` runs after each validation (Optuna's pruning hook). Runs on
    the device of `cfg.train.device`."""
    device = resolve_device(cfg.train.device)
    vae, scale = load_vae(vae_path, device)
    process = make_process(cfg.diffusion)
    with seeded_init(cfg.train.seed):
        unet = build_unet(cfg, condition.channels, vae.latent_channels, device)
    bundle = lambda net: LatentDiffusion(net, vae, process, scale)  # noqa: E731
    # Under augmentation every variant is encoded: a turned map's latent is not the turned latent.
    digest = dataset_digest(dataset_dir)
    latents = train_latents(bundle(unet), dataset_dir, condition.encodings, cfg.data.augment, work_dir,
                            dataset_key=digest)
    val = RadioMapDataset(dataset_dir, "val", condition.encodings)

    def val_fn(current, step):
        return sample_metrics(bundle(current), val, cfg.sample_steps, VAL_SAMPLES)[0]

    result = train_loop(
        model=unet, loss_fn=denoiser_loss(process, cfg.condition_dropout, dynamic_channel_mask(condition.encodings),
                                    cfg.loss_weighting),
        config=cfg.train,
        log=log, val_fn=val_fn, progress=progress, should_stop=should_stop,
        batches=loader_factory(latents, batch_size=cfg.data.batch_size, seed=cfg.train.seed,
                               num_workers=cfg.data.workers, device=device),
        checkpoint_dir=run_folder(work_dir, KIND, cfg, condition, digest, file_digest(vae_path)),
        name=f"train_ldm[{cfg.diffusion.prediction.value}]",
    )
    model = bundle(result.ema.ema_model.eval())
    test = RadioMapDataset(dataset_dir, "test", condition.encodings)
    metrics, pred, target = sample_metrics(model, test, cfg.sample_steps)
    static, _, _ = sample_metrics(model, test, cfg.sample_steps, static=True)
    out = {f"test_{k}": v for k, v in metrics.items()}
    out.update({f"test_static_{k}": static[k] for k in ("nmse", "tx_response")})
    out.update(steps_per_s=result.steps_per_s, train_seconds=result.train_seconds, device=device_name(device))
    shown = spread_indices(len(test))
    cond = torch.stack([test[i]["cond"] for i in shown])
    figure = comparison_figure(target[shown], {f"DDIM-{cfg.sample_steps}": pred[shown]}, cond=cond,
                               title="LDM test samples")
    return LDMResult(model, out, figure)


class SampleRadioMap(torch.nn.Module):
    """The MLflow model view of the denoiser: condition `[B, C, H, W]` -> gain `[B, 1, H, W]`,
    `steps` steps of its sampler from seeded noise."""

    def __init__(self, model: LatentDiffusion, steps: int, seed: int = 0) -> None:
        super().__init__()
        self.unet, self.vae = model.unet, model.vae
        self.model, self.steps, self.seed = model, steps, seed

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)  # CPU: the same noise on any device
        return generate(self.model, cond, steps=self.steps, generator=generator)
