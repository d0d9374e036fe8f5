"""A few steps of the real `train_loop` on a toy regression, as run by each torchrun rank.

`python -m torch.distributed.run --standalone --nproc_per_node=2 -m tests._ddp_worker OUT`
makes every rank write `OUT/rank{r}.pt` (final weights, EMA, what it logged, its result);
tests/test_distributed.py launches it and also runs `train_toy` in one process to compare.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from radiodiff.stages.parity import ParityPlan, train_to_parity
from radiodiff.training import distributed
from radiodiff.training.batching import loader_factory
from radiodiff.training.config import LoopConfig, OptimConfig
from radiodiff.training.loop import TrainResult, train_loop

BATCH = 7  # odd, so two ranks get unequal slices (4 and 3 samples)


def toy_model() -> nn.Module:
    """The same initial weights in every process."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))


def toy_data() -> TensorDataset:
    """40 samples `x [4] -> y [2]` of a noisy linear map."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=generator)
    y = x @ torch.randn(4, 2, generator=generator) + 0.1 * torch.randn(40, 2, generator=generator)
    return TensorDataset(x, y)


def _loss_fn(model, batch, step, generator):
    x, y = batch
    error = model(x) - y
    return error.pow(2).mean(), {"abs_error": float(error.detach().abs().mean())}


def _val_fn(model, step):
    x, y = toy_data().tensors
    return {"mse": float(F.mse_loss(model(x), y))}


def train_toy(model: nn.Module, *, devices: int, checkpoint_dir: Path | None, log, should_stop=None) -> TrainResult:
    """4 optimizer steps of 2 micro-batches of `BATCH`, with validation and checkpoints."""
    config = LoopConfig(
        total_steps=4, accum_steps=2, devices=devices, seed=3, log_every=1, val_every=2, checkpoint_every=2,
        optim=OptimConfig(lr=1e-2, min_lr=1e-3, ema_decay=0.9, ema_start_step=1, grad_clip=1.0),
    )
    return train_loop(model=model, loss_fn=_loss_fn, batches=loader_factory(toy_data(), batch_size=BATCH, seed=5),
                      config=config, log=log, val_fn=_val_fn, checkpoint_dir=checkpoint_dir, progress=False,
                      should_stop=should_stop)


def parity_toy(ranks: distributed.Ranks, checkpoint_dir: Path) -> tuple[nn.Module, ParityPlan, list[ParityPlan]]:
    """The toy run to compute parity (`train_to_parity`) on clocks that disagree: rank 0's says
    each call took 1 s at 4 step/s, rank 1's that the time was reached at once. Rank 0's decides,
    so both train the same codas (rank 1 on its own clock would stop, and rank 0 would wait on it)."""
    model, calls, saved = toy_model(), [], []
    plan = ParityPlan(generative_seconds=2.5, steps_per_s=4.0, total_steps=4)

    def train(loop: LoopConfig) -> TrainResult:
        result = train_loop(model=model, loss_fn=_loss_fn, batches=loader_factory(toy_data(), batch_size=BATCH, seed=5),
                            config=replace(loop, devices=ranks.world_size), log=lambda metrics, step: None,
                            checkpoint_dir=checkpoint_dir, progress=False)
        calls.append(loop.total_steps)
        seconds = float(len(calls)) if ranks.is_main else 100.0
        return replace(result, train_seconds=seconds, steps_per_s=4.0)

    loop = LoopConfig(total_steps=4, seed=3, log_every=1, val_every=2, checkpoint_every=2,
                      optim=OptimConfig(lr=1e-2, min_lr=1e-3, ema_decay=0.9, ema_start_step=1, grad_clip=1.0))
    _, final = train_to_parity(train, loop, plan, lambda grown: saved.append(grown) if ranks.is_main else None,
                               lambda line: None)
    return model, final, saved


def main(out_dir: str) -> None:
    out = Path(out_dir)
    with distributed.process_group() as ranks:
        model, logged = toy_model(), []
        result = train_toy(model, devices=ranks.world_size, checkpoint_dir=out / "checkpoints",
                           log=lambda metrics, step: logged.append((step, metrics)))
        stop_calls, resumed = [], toy_model()
        # Interrupted at step 2 by rank 0's should_stop, then resumed from its checkpoint.
        interrupted = train_toy(toy_model(), devices=ranks.world_size, checkpoint_dir=out / "resume",
                                log=lambda metrics, step: None,
                                should_stop=lambda step, metrics: stop_calls.append(step) or step >= 2)
        train_toy(resumed, devices=ranks.world_size, checkpoint_dir=out / "resume", log=lambda metrics, step: None)
        parity_model, parity_plan, parity_saved = parity_toy(ranks, out / "parity")
        torch.save({"parity_weights": parity_model.state_dict(), "parity_coda_steps": parity_plan.coda_steps,
                    "parity_saved": [grown.coda_steps for grown in parity_saved],
                    "weights": model.state_dict(), "ema": result.ema.ema_model.state_dict(), "logged": logged,
                    "val_metrics": result.val_metrics, "train_loss": result.train_loss,
                    "checkpoint": str(result.checkpoint), "world_size": ranks.world_size,
                    "interrupted_at": interrupted.step, "stop_calls": stop_calls, "resumed": resumed.state_dict()},
                   out / f"rank{ranks.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
