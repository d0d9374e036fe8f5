"""The VAE's model file: build, save and load (onto a device)."""

from __future__ import annotations

from pathlib import Path

from radiodiff.artifacts.files import Device, load_model_file, save_model
from radiodiff.config import VAEConfig
from radiodiff.models.vae import AutoencoderKL
from radiodiff.typed_yaml import build

KIND = "vae"  # the `kind` of the file


def build_vae(cfg: VAEConfig, device: Device = "cpu") -> AutoencoderKL:
    """The autoencoder gain `[1, H, W]` -> latent described by `cfg`, on `device` (initialised on
    the CPU, so a seeded build has the same weights on any device)."""
    return AutoencoderKL(in_channels=1, latent_channels=cfg.latent_channels, base_channels=cfg.base_channels,
                         channel_mults=cfg.channel_mults, num_res_blocks=cfg.num_res_blocks,
                         dropout=cfg.dropout).to(device)


def save_vae(path: Path, model: AutoencoderKL, cfg: VAEConfig, *, scale_factor: float,
             resolution: int | None = None) -> None:
    """Write the autoencoder file (weights, config, latent scale factor, and the side in pixels
    of the maps it was trained on: every model of the pipeline works at that resolution)."""
    extra = {"scale_factor": scale_factor} | ({} if resolution is None else {"resolution": int(resolution)})
    save_model(path, kind=KIND, state_dict=model.state_dict(), config=cfg, extra=extra)


def trained_resolution(path: Path) -> int | None:
    """The map side (pixels) the VAE file at `path` was trained on; None for a file that predates
    the record."""
    value = load_model_file(path, KIND)["extra"].get("resolution")
    return None if value is None else int(value)


def load_vae(path: Path, device: Device = "cpu") -> tuple[AutoencoderKL, float]:
    """The autoencoder of `save_vae` in eval mode on `device`, and its scale factor."""
    payload = load_model_file(path, KIND)
    model = build_vae(build(VAEConfig, payload["config"], where=f"{path}:config"), device)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), float(payload["extra"]["scale_factor"])
