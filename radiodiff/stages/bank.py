"""build_bank: static stage-1 midpoints of every scene of the chosen splits, into the Parquet bank.

A scene is a layout (map id): its static condition is the buildings alone, so one midpoint per
(scene, seed, t_mid) serves every Tx and traffic state of that layout. Work is split into
chunks of scenes; each chunk writes its own part file, and entries already in the bank are
skipped, so a killed build resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from radiodiff.artifacts.keys import bank_key
from radiodiff.bank import Midpoint, MidpointBank, layout_embedding
from radiodiff.config import FluxConfig
from radiodiff.data.assemble import read_index
from radiodiff.flux import flux_plan, scene_noise, stage1_midpoint, static_conditions
from radiodiff.generation import LatentDiffusion


@dataclass(frozen=True)
class SceneSet:
    """Layouts of some splits: `ids` `[S]` map ids and `buildings` `[S, H, W]` bool."""

    ids: np.ndarray
    buildings: np.ndarray

    def take(self, rows: Sequence[int]) -> SceneSet:
        return SceneSet(self.ids[list(rows)], self.buildings[list(rows)])


def load_scenes(dataset_dir: Path, splits: Sequence[str]) -> SceneSet:
    """Every distinct layout of `splits` in a prepared dataset, in index order."""
    index = read_index(Path(dataset_dir))
    ids, buildings = [], []
    for split in splits:
        rows = index[index["split"] == split].drop_duplicates("map_id").sort_values("scene_offset")
        scenes = np.load(Path(dataset_dir) / f"{split}_scenes.npy", mmap_mode="r")
        ids += rows["map_id"].tolist()
        buildings += [scenes[offset, 0] > 0 for offset in rows["scene_offset"]]
    return SceneSet(np.asarray(ids, dtype=np.int64), np.stack(buildings))


def compute_midpoints(model: LatentDiffusion, scenes: SceneSet, *, t_mid: int, seed: int, cfg: FluxConfig,
                      channels: int) -> torch.Tensor:
    """Static midpoints `[S, 3, h, w]` of `scenes` at `t_mid`, in batches of `cfg.batch_size`
    on the model's device, returned on the CPU (for the bank)."""
    plan = flux_plan(model.process, t_mid, cfg.prefix_steps, cfg.tail_steps)
    out = []
    for start in range(0, len(scenes.ids), cfg.batch_size):
        part = scenes.take(range(start, min(start + cfg.batch_size, len(scenes.ids))))
        cond = static_conditions(part.buildings, channels)
        x_start = scene_noise(model.latent_shape(cond)[1:], part.ids, seed)
        out.append(stage1_midpoint(model, cond, plan, x_start).cpu())
    return torch.cat(out)


def fill_bank(model: LatentDiffusion, ldm_path: Path, bank_dir: Path, scenes: SceneSet, cfg: FluxConfig,
              channels: int) -> int:
    """Insert the missing midpoints of `scenes` for every t_mid and seed; returns rows written."""
    written = 0
    embeddings = [layout_embedding(b) for b in scenes.buildings]
    for t_mid in cfg.t_mids:
        bank = MidpointBank(bank_dir, bank_key(model, ldm_path, cfg, t_mid))
        for seed in cfg.seeds:
            missing = [i for i, scene in enumerate(scenes.ids) if not bank.has(int(scene), seed=seed)]
            if not missing:
                continue
            latents = compute_midpoints(model, scenes.take(missing), t_mid=t_mid, seed=seed, cfg=cfg,
                                        channels=channels)
            written += bank.put([Midpoint(int(scenes.ids[i]), latent.numpy(), embeddings[i], seed=seed)
                                 for i, latent in zip(missing, latents)])
    return written


def bank_summary(model: LatentDiffusion, ldm_path: Path, bank_dir: Path, cfg: FluxConfig) -> pd.DataFrame:
    """Entries per t_mid under this model's keys (what `build_bank` reports)."""
    rows = [{"t_mid": t_mid, "entries": len(MidpointBank(bank_dir, bank_key(model, ldm_path, cfg, t_mid)))}
            for t_mid in cfg.t_mids]
    return pd.DataFrame(rows)
