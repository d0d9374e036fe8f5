"""The denoiser's model files: the LDM (tied to its VAE), its fine-tuned Flux tail and its copy
fine-tuned on its few-step sampler (each tied to the LDM): build, save and load (onto a device).
A file paired with another model than the one it was trained on is refused."""

from __future__ import annotations

import copy
from pathlib import Path

from radiodiff.artifacts.files import Device, file_digest, load_model_file, save_model
from radiodiff.artifacts.vae import load_vae
from radiodiff.config import ConditionConfig, FluxConfig, LDMConfig
from radiodiff.diffusion.process import make_process
from radiodiff.errors import UserError
from radiodiff.generation import LatentDiffusion
from radiodiff.models.unet import ConditionalUNet
from radiodiff.options import Precision
from radiodiff.typed_yaml import build

LDM, TAIL, FEW_STEP = "ldm", "flux_tail", "few_step"  # the `kind` of each file


def build_unet(cfg: LDMConfig, cond_channels: int, latent_channels: int = 3, device: Device = "cpu") -> ConditionalUNet:
    """The denoiser described by `cfg` for a condition of `cond_channels` channels, on `device`
    (initialised on the CPU); its output channels and time scale are what the objective's
    process asks for."""
    unet, process = cfg.unet, make_process(cfg.diffusion)
    return ConditionalUNet(latent_channels=latent_channels, cond_channels=cond_channels,
                           base_channels=unet.base_channels, channel_mults=unet.channel_mults,
                           num_res_blocks=unet.num_res_blocks, cond_base_channels=unet.cond_base_channels,
                           attention=unet.attention, window_size=unet.window_size, fft_filter=unet.fft_filter,
                           dropout=unet.dropout, out_channels=process.output_channels(latent_channels),
                           time_scale=process.time_embedding_scale).to(device)


def save_ldm(path: Path, unet: ConditionalUNet, cfg: LDMConfig, condition: ConditionConfig, vae_path: Path) -> None:
    """Write the denoiser file (weights, configs, the digest of the VAE it was trained on)."""
    save_model(path, kind=LDM, state_dict=unet.state_dict(), config={"ldm": cfg, "condition": condition},
               extra={"vae_digest": file_digest(vae_path)})


def load_ldm(path: Path, vae_path: Path, device: Device = "cpu", precision: Precision = Precision.FP32,
             ) -> tuple[LatentDiffusion, LDMConfig, ConditionConfig]:
    """The sampling bundle of `save_ldm` and `save_vae` files on `device`, sampling at a resolved
    `precision` (see `radiodiff.devices.resolve_precision`), with its configs."""
    payload = load_model_file(path, LDM)
    if payload["extra"]["vae_digest"] != file_digest(vae_path):
        raise UserError(f"{path} was trained on another VAE than {vae_path}")
    raw = payload["config"]["ldm"]
    raw.get("unet", {}).pop("two_heads", None)  # files written before the process set the heads
    cfg = build(LDMConfig, raw, where=f"{path}:ldm")
    condition = build(ConditionConfig, payload["config"]["condition"], where=f"{path}:condition")
    vae, scale = load_vae(vae_path, device)
    unet = build_unet(cfg, condition.channels, vae.latent_channels, device)
    unet.load_state_dict(payload["state_dict"])
    return LatentDiffusion(unet.eval(), vae, make_process(cfg.diffusion), scale, precision), cfg, condition


def save_tail(path: Path, unet: ConditionalUNet, cfg: FluxConfig, ldm_path: Path) -> None:
    """Write the fine-tuned tail (weights), tied to the denoiser file it was tuned from."""
    _save_tuned(path, TAIL, unet, cfg, ldm_path)


def load_tail(path: Path, ldm_path: Path, model: LatentDiffusion) -> ConditionalUNet:
    """The fine-tuned tail of `save_tail` on the device of `model`, refused unless it was tuned
    from `ldm_path` (a copy of `model.unet` with the tail's weights)."""
    return _load_tuned(path, TAIL, ldm_path, model)


def save_few_step(path: Path, unet: ConditionalUNet, cfg: FluxConfig, ldm_path: Path) -> None:
    """Write the denoiser fine-tuned on its own few-step sampler (the Flux tail's control),
    tied to the denoiser file it was tuned from."""
    _save_tuned(path, FEW_STEP, unet, cfg, ldm_path)


def load_few_step(path: Path, ldm_path: Path, model: LatentDiffusion) -> ConditionalUNet:
    """The fine-tuned few-step denoiser of `save_few_step`, as `load_tail` does for the tail."""
    return _load_tuned(path, FEW_STEP, ldm_path, model)


def _save_tuned(path: Path, kind: str, unet: ConditionalUNet, cfg: FluxConfig, ldm_path: Path) -> None:
    save_model(path, kind=kind, state_dict=unet.state_dict(), config={"flux": cfg},
               extra={"ldm_digest": file_digest(ldm_path)})


def _load_tuned(path: Path, kind: str, ldm_path: Path, model: LatentDiffusion) -> ConditionalUNet:
    payload = load_model_file(path, kind)
    if payload["extra"]["ldm_digest"] != file_digest(ldm_path):
        raise UserError(f"{path} was fine-tuned from another denoiser than {ldm_path}")
    unet = copy.deepcopy(model.unet)
    unet.load_state_dict(payload["state_dict"])
    return unet.eval()
