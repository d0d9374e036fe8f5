"""Settings of the shared training loop, as two frozen dataclasses.

The stage config (radiodiff/config.py) fills these from params.yaml; nothing here reads
files. Invalid values raise UserError, since they come from the user's params.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radiodiff.devices import check_device_spec
from radiodiff.errors import UserError
from radiodiff.options import Precision


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW, learning-rate schedule, gradient clipping and EMA.

    Defaults are RadioDiff's paper values (lr 5e-5 -> 5e-6, power 0.96, EMA 0.999 from
    step 10,000); weight decay is RadioDiff's 1e-4 rather than AdamW's 1e-2.

    - lr: peak learning rate reached at the end of warm-up.
    - min_lr: absolute floor of the polynomial decay, reached at `total_steps`.
    - warmup_steps: optimizer steps of linear warm-up from 0 (0 = none).
    - lr_power: exponent of the decay `(1 - progress) ** lr_power`.
    - weight_decay, betas, eps: AdamW's.
    - grad_clip: max global L2 norm of the gradients; None disables clipping.
    - ema_decay, ema_start_step: see `EMA` (before the start step the EMA copies weights).
    """

    lr: float = 5e-5
    min_lr: float = 5e-6
    warmup_steps: int = 0
    lr_power: float = 0.96
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    ema_start_step: int = 10_000

    def __post_init__(self) -> None:
        _require(
            0 <= self.min_lr <= self.lr and self.lr > 0,
            f"need 0 <= min_lr <= lr and lr > 0, got min_lr={self.min_lr}, lr={self.lr}",
        )
        for name in ("warmup_steps", "ema_start_step", "weight_decay"):
            _require(getattr(self, name) >= 0, f"{name} must be non-negative, got {getattr(self, name)}")
        for name in ("lr_power", "eps"):
            _require(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        _require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas: two values in [0, 1)")
        _require(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or null: {self.grad_clip}")
        _require(0 <= self.ema_decay <= 1, f"ema_decay must be in [0, 1], got {self.ema_decay}")


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """How long to train and how often to log, validate and checkpoint.

    - total_steps: optimizer steps of the whole run (the schedule ends here).
    - accum_steps: micro-batches per optimizer step (RadioDiff: 8); the effective batch is
      `accum_steps * batch_size`.
    - seed: base seed of the per-step generators handed to `loss_fn` and `val_fn`.
    - device: where the stage trains: auto | cpu | cuda | cuda:N (`radiodiff.devices`;
      RADIODIFF_DEVICE overrides it). Under torchrun each rank takes the GPU of its rank.
    - precision: autocast of the forward passes: auto (bf16 where the device computes it
      natively, else fp32; see `radiodiff.devices.resolve_precision`), bf16, fp16 (CUDA only,
      with a loss scaler that is checkpointed) or fp32.
    - compile: run the forward passes through `torch.compile` (the plain module keeps the
      weights, so EMA, optimizer and checkpoints do not change).
    - channels_last: keep the network's convolution weights and inputs in NHWC memory order
      (faster convolutions on tensor-core GPUs).
    - tf32: let float32 matmuls on CUDA use TF32 tensor cores (torch's own default leaves
      them exact). Off until measured; no effect on a CPU.
    - log_every, val_every, checkpoint_every: intervals in optimizer steps; the last step
      always logs, validates and checkpoints.
    - keep_checkpoints: how many step checkpoints to keep on disk (newest first).
    - val_on_ema: hand the EMA model (not the live one) to `val_fn`.
    - devices: processes (one per GPU, or CPU processes) the stage trains on; above 1 the
      stage re-launches itself under torchrun and each rank takes a slice of every batch
      (see `distributed`). Results are deterministic per `devices`, not across values of it.
    - optim: the optimizer settings.
    """

    total_steps: int
    accum_steps: int = 1
    seed: int = 0
    device: str = "auto"
    precision: Precision = Precision.FP32
    compile: bool = False
    channels_last: bool = False
    tf32: bool = False
    log_every: int = 50
    val_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    val_on_ema: bool = True
    devices: int = 1
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        _require(self.total_steps >= 1, f"total_steps must be at least 1, got {self.total_steps}")
        _require(
            self.optim.warmup_steps < self.total_steps,
            f"warmup_steps ({self.optim.warmup_steps}) must be below total_steps ({self.total_steps})",
        )
        for name in ("accum_steps", "log_every", "val_every", "checkpoint_every", "keep_checkpoints", "devices"):
            _require(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        _require(self.seed >= 0, f"seed must be non-negative, got {self.seed}")
        check_device_spec(self.device, "train.device")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)
