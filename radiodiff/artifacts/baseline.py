"""The supervised baseline's model file: build, save and load (onto a device), and its one pass."""

from __future__ import annotations

from pathlib import Path

import torch

from radiodiff.artifacts.files import Device, load_model_file, save_model
from radiodiff.config import BaselineConfig, ConditionConfig
from radiodiff.data.scaling import mask_buildings
from radiodiff.models.baseline import SupervisedUNet
from radiodiff.typed_yaml import build

KIND = "baseline"  # the `kind` of the file


def build_baseline(cfg: BaselineConfig, cond_channels: int, device: Device = "cpu") -> SupervisedUNet:
    """The supervised UNet condition -> gain described by `cfg`, on `device` (initialised on the CPU)."""
    return SupervisedUNet(in_channels=cond_channels, base_channels=cfg.base_channels,
                          channel_mults=cfg.channel_mults, num_res_blocks=cfg.num_res_blocks,
                          dropout=cfg.dropout).to(device)


def save_baseline(path: Path, model: SupervisedUNet, cfg: BaselineConfig, condition: ConditionConfig) -> None:
    """Write the baseline file (weights and configs)."""
    save_model(path, kind=KIND, state_dict=model.state_dict(), config={"baseline": cfg, "condition": condition})


def load_baseline(path: Path, device: Device = "cpu") -> tuple[SupervisedUNet, ConditionConfig]:
    """The baseline of `save_baseline` in eval mode on `device`, and its condition config."""
    payload = load_model_file(path, KIND)
    cfg = build(BaselineConfig, payload["config"]["baseline"], where=f"{path}:baseline")
    condition = build(ConditionConfig, payload["config"]["condition"], where=f"{path}:condition")
    model = build_baseline(cfg, condition.channels, device)
    model.load_state_dict(payload["state_dict"])
    return model.eval(), condition


def predict_baseline(model: SupervisedUNet, cond: torch.Tensor) -> torch.Tensor:
    """Gain `[B, 1, H, W]` in [0, 1] for conditions `[B, C, H, W]`, 0 on buildings."""
    return mask_buildings(model(cond).float(), cond[:, 0])
