"""Learning-rate schedule: linear warm-up, then polynomial decay to an absolute floor."""

from __future__ import annotations

import torch


def learning_rate(
    step: int,
    *,
    base_lr: float,
    min_lr: float,
    warmup_steps: int,
    total_steps: int,
    power: float,
) -> float:
    """The learning rate for the optimizer update that brings the model to `step`.

    - `0 <= step <= warmup_steps`: linear from 0 to `base_lr` (`base_lr * step / warmup_steps`).
    - `warmup_steps < step <= total_steps`: `max(min_lr, base_lr * (1 - progress) ** power)`,
      with `progress = (step - warmup_steps) / (total_steps - warmup_steps)`, so the last
      update (`step == total_steps`) uses exactly `min_lr`.
    - `step > total_steps`: `min_lr`.

    `min_lr` is an absolute learning rate (RadioDiff's code multiplies it by `base_lr`,
    which turns its 5e-6 floor into 2.5e-10). Paper values: base 5e-5, min 5e-6, power 0.96.
    """
    if not 0 <= min_lr <= base_lr:
        raise ValueError(f"need 0 <= min_lr <= base_lr, got min_lr={min_lr}, base_lr={base_lr}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}")
    if power <= 0:
        raise ValueError(f"power must be positive, got {power}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if step <= warmup_steps and warmup_steps > 0:
        return base_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return max(min_lr, base_lr * (1.0 - progress) ** power)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply `lr` to every parameter group of `optimizer` (call before `optimizer.step()`)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
