"""One-tensor-in, one-tensor-out views of the trained models, for MLflow's model format."""

from __future__ import annotations

import torch
from torch import nn

from radiodiff.data.scaling import to_gain, to_model_scale
from radiodiff.generation import LatentDiffusion, generate
from radiodiff.models.vae import AutoencoderKL
from radiodiff.stages.baseline import predict_baseline


class Reconstruct(nn.Module):
    """gain `[B, 1, H, W]` in [0, 1] -> its VAE reconstruction (posterior mode), same shape."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, gain: torch.Tensor) -> torch.Tensor:
        return to_gain(self.vae.decode(self.vae.encode(to_model_scale(gain)).mode()))


class SampleRadioMap(nn.Module):
    """condition `[B, C, H, W]` -> gain `[B, 1, H, W]`: DDIM with `steps` steps from seeded noise."""

    def __init__(self, model: LatentDiffusion, steps: int, seed: int = 0) -> None:
        super().__init__()
        self.unet, self.vae = model.unet, model.vae
        self.model, self.steps, self.seed = model, steps, seed

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=cond.device).manual_seed(self.seed)
        return generate(self.model, cond, steps=self.steps, generator=generator)


class PredictBaseline(nn.Module):
    """condition `[B, C, H, W]` -> gain `[B, 1, H, W]` in one pass, 0 on buildings."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return predict_baseline(self.model, cond)
