"""The keys that tie bank midpoints to the model and sampler that made them."""

from __future__ import annotations

from pathlib import Path

from radiodiff.artifacts.files import file_digest
from radiodiff.bank import BankKey
from radiodiff.config import FluxConfig
from radiodiff.flux import flux_plan, sampler_hash
from radiodiff.generation import LatentDiffusion


def model_hash(ldm_path: Path) -> str:
    """The checkpoint part of a bank key: the denoiser file's digest (it names its VAE's)."""
    return file_digest(ldm_path)[:16]


def bank_key(model: LatentDiffusion, ldm_path: Path, cfg: FluxConfig, t_mid: int) -> BankKey:
    """The key of the static midpoints at `t_mid` (steps of T) made by this model file and
    `cfg`'s prefix; its t_mid is the plan's own time (a step index, or continuous t)."""
    plan = flux_plan(model.process, t_mid, cfg.prefix_steps, cfg.tail_steps)
    return BankKey(model_hash=model_hash(ldm_path), sampler_hash=sampler_hash(model.process, plan), t_mid=plan.t_mid)
