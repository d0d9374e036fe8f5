"""The generic, resumable training loop shared by the VAE, LDM and baseline stages.

One concept per module: `config` (LoopConfig, OptimConfig), `lr_schedule`, `ema`,
`batching` (seeded resumable batch order), `rng` (per-step seeds, RNG state),
`checkpoint` (atomic save, weights_only load), `distributed` (DDP over torchrun
processes: sharded batches, rank-0 side effects) and `loop` (`train_loop`).
"""

from radiodiff.training.batching import BatchOrder, ResumableBatchSampler, loader_factory
from radiodiff.training.checkpoint import (
    Checkpoint,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from radiodiff.training.config import LoopConfig, OptimConfig
from radiodiff.training.ema import EMA
from radiodiff.training.loop import TrainResult, train_loop
from radiodiff.training.lr_schedule import learning_rate, set_learning_rate
from radiodiff.training.rng import capture_rng_state, derive_seed, restore_rng_state, seeded_generator

__all__ = [
    "EMA",
    "BatchOrder",
    "Checkpoint",
    "LoopConfig",
    "OptimConfig",
    "ResumableBatchSampler",
    "TrainResult",
    "capture_rng_state",
    "checkpoint_path",
    "derive_seed",
    "latest_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "loader_factory",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
    "seeded_generator",
    "set_learning_rate",
    "train_loop",
]
