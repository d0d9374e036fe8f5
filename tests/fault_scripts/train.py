"""Driver: train the toy VAE or LDM with `train_vae` / `train_ldm`, printing "step N" per step.

    python tests/fault_scripts/train.py {vae,ldm} DATASET WORK OUT [--vae VAE_FILE] [--die-in-save STEP]

Resumes from WORK like the real stage; writes the final model file to OUT and prints
"metrics {json}". `--die-in-save STEP` SIGKILLs the process halfway through writing the
checkpoint of STEP.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from radiodiff.config import ConditionConfig, DataLoaderConfig, DiffusionConfig, LDMConfig, UNetConfig, VAEConfig
from radiodiff.training.config import LoopConfig, OptimConfig

LOOP = LoopConfig(total_steps=8, log_every=1, val_every=4, checkpoint_every=2, keep_checkpoints=2,
                  optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, ema_start_step=2, ema_decay=0.5))
DATA = DataLoaderConfig(batch_size=4, workers=0)
CONFIGS = {
    "vae": VAEConfig(base_channels=8, channel_mults=(1, 2, 4), data=DATA, train=LOOP),
    "ldm": LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                     diffusion=DiffusionConfig(num_steps=50), sample_steps=2, data=DATA, train=LOOP),
}
INIT_SEED = 0  # fresh weights come from torch's global generator


def train(kind: str, dataset: Path, work: Path, out: Path, vae: Path | None, log) -> dict[str, float]:
    """Train (or resume) the toy model of `kind`, save it to `out`; return its metrics."""
    from radiodiff.artifacts.denoiser import save_ldm
    from radiodiff.artifacts.vae import save_vae
    from radiodiff.stages.ldm import train_ldm
    from radiodiff.stages.vae import train_vae

    torch.manual_seed(INIT_SEED)
    cfg = CONFIGS[kind]
    if kind == "vae":
        result = train_vae(cfg, dataset_dir=dataset, work_dir=work, log=log, progress=False)
        save_vae(out, result.model, cfg, scale_factor=result.scale_factor)
    else:
        result = train_ldm(cfg, ConditionConfig(), dataset_dir=dataset, vae_path=vae, work_dir=work, log=log,
                           progress=False)
        save_ldm(out, result.model.unet, cfg, ConditionConfig(), vae)
    return result.metrics


def die_in_checkpoint_save(step: int) -> None:
    """Make the write of checkpoint `step` stop halfway with a SIGKILL (temp file half full)."""
    import io

    from tests.fault_scripts.harness import torn_write

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, Path)) and Path(f).name.startswith(f".step_{step:08d}.pt."):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            torn_write(Path(f), buffer.getvalue())
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(CONFIGS))
    parser.add_argument("dataset", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--vae", type=Path)
    parser.add_argument("--die-in-save", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.die_in_save is not None:
        die_in_checkpoint_save(args.die_in_save)

    def log(metrics, step):
        if "train/loss" in metrics:
            print(f"step {step}", flush=True)

    metrics = train(args.kind, args.dataset, args.work, args.out, args.vae, log)
    print("metrics " + json.dumps(metrics), flush=True)


if __name__ == "__main__":
    main()
