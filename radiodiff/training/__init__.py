"""The generic, resumable training loop shared by the VAE, LDM and baseline stages.

One concept per module: `config` (LoopConfig, OptimConfig), `lr_schedule`, `ema`,
`batching` (seeded resumable batch order), `rng` (per-step seeds, RNG state),
`checkpoint` (atomic save, weights_only load), `distributed` (DDP over torchrun
processes: sharded batches, rank-0 side effects) and `loop` (`train_loop`).

Import from the modules themselves: this package file stays empty so that parsing params
(which reads `config`) never loads torch.
"""
