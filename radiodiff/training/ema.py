"""Exponential moving average (EMA) of a model's parameters."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `ema_model`, a frozen copy of a model whose parameters trail the live ones.

    After optimizer step `step` (counted from 1), `update(model, step)` does
    - `step < start_step`: copy the parameters (early weights move too fast to average);
    - otherwise: `ema = decay * ema + (1 - decay) * param`.
    Buffers (e.g. BatchNorm running statistics) are always copied, never averaged.
    RadioDiff uses decay 0.999 from step 10,000 on.
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.999, start_step: int = 0) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if start_step < 0:
            raise ValueError(f"EMA start_step must be non-negative, got {start_step}")
        self.decay = decay
        self.start_step = start_step
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the current weights of `model` (same architecture, same dtypes) into the
        average: one fused `_foreach` call over all parameters, not a kernel per tensor."""
        averaged = list(self.ema_model.parameters())
        live = [param.detach() for param in model.parameters()]
        if step < self.start_step:
            torch._foreach_copy_(averaged, live)
        else:
            # lerp(ema, p, w) = ema + w * (p - ema) = decay * ema + (1 - decay) * p.
            torch._foreach_lerp_(averaged, live, 1.0 - self.decay)
        ema_buffers = dict(self.ema_model.named_buffers())
        for name, buffer in model.named_buffers():
            ema_buffers[name].copy_(buffer)

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite the parameters and buffers of `model` with the averaged ones."""
        model.load_state_dict(self.ema_model.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (the `ema_model` state dict); decay and start come from config."""
        return self.ema_model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore averaged weights saved by `state_dict`."""
        self.ema_model.load_state_dict(state)
