"""train_baseline: a RadioUNet-style supervised UNet, condition -> gain in one pass.

The peer that users would pick instead of a diffusion model: trained on the same data with
the same condition channels, so `evaluate` compares like with like.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from radiodiff.artifacts.baseline import build_baseline, predict_baseline
from radiodiff.config import BaselineConfig, ConditionConfig
from radiodiff.data.augment import augmented
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.devices import device_name, module_device, resolve_device
from radiodiff.metrics import summarize, tx_response_ratio
from radiodiff.models.baseline import SupervisedUNet
from radiodiff.stages.common import dataset_digest, predict_all, run_folder
from radiodiff.stages.figures import comparison_figure, spread_indices
from radiodiff.stages.parity import (
    ParityPlan,
    measure_steps_per_second,
    parity_metrics,
    plan_steps,
    read_plan,
    stretched,
    train_to_parity,
    write_plan,
)
from radiodiff.training import distributed
from radiodiff.training.batching import loader_factory
from radiodiff.training.loop import train_loop
from radiodiff.training.rng import seeded_init

KIND = "baseline"  # names its resume folders
EVAL_BATCH = 64


@dataclass(frozen=True)
class BaselineResult:
    """Trained (EMA) supervised UNet, its test metrics and a figure."""

    model: SupervisedUNet
    metrics: dict[str, float]
    figure: Any


def _loss_fn(model, batch, step, generator):
    loss = F.mse_loss(model(batch["cond"]).float(), batch["gain"])
    return loss, {}


def evaluate_baseline(model: SupervisedUNet, dataset, limit: int | None = None):
    """Metrics (with the Tx-response ratio), predictions and targets over a dataset."""
    pred, target, maps = predict_all(lambda b: predict_baseline(model, b["cond"]), dataset, EVAL_BATCH, limit,
                                     device=module_device(model))
    metrics = summarize(pred, target)
    metrics["tx_response"] = tx_response_ratio(pred, target, maps)
    return metrics, pred, target


def train_baseline(cfg: BaselineConfig, condition: ConditionConfig, *, dataset_dir: Path, work_dir: Path, log,
                   progress: bool = True, parity_seconds: float | None = None) -> BaselineResult:
    """Train on the train split (resumable from `work_dir`) on the device of `cfg.train.device`,
    and measure on the test split.

    parity_seconds: the generative chain's training wall time (s); when given, the run lasts
    at least that long (`radiodiff.stages.parity`): its step count is planned from the
    baseline's measured rate, a coda at the floor learning rate makes up a shortfall, and the
    metrics report both times.
    """
    device = resolve_device(cfg.train.device)
    train = RadioMapDataset(dataset_dir, "train", condition.encodings)
    val = RadioMapDataset(dataset_dir, "val", condition.encodings)
    with seeded_init(cfg.train.seed):
        model = build_baseline(cfg, condition.channels, device)
    batches = loader_factory(augmented(train, cfg.data.augment), batch_size=cfg.data.batch_size,
                             seed=cfg.train.seed, num_workers=cfg.data.workers, device=device)
    digest = dataset_digest(dataset_dir)

    def train_for(loop, folder):
        return train_loop(model=model, loss_fn=_loss_fn, config=loop, log=log, progress=progress,
                          val_fn=lambda current, step: evaluate_baseline(current, val, limit=256)[0],
                          batches=batches, checkpoint_dir=folder, name="train_baseline")

    plan = None
    if parity_seconds is None:
        result = train_for(cfg.train, run_folder(work_dir, KIND, cfg, condition, digest))
    else:
        plan_file = run_folder(work_dir, KIND, cfg, condition, digest).with_suffix(".parity.json")
        plan = distributed.from_main(read_plan(plan_file, parity_seconds) if distributed.is_main() else None)
        if plan is None:  # every DDP rank takes part in the probe; rank 0's rate decides
            rate = distributed.from_main(measure_steps_per_second(model, _loss_fn, batches, cfg.train))
            plan = ParityPlan(parity_seconds, rate, plan_steps(parity_seconds, rate, cfg.train.total_steps))
            if distributed.is_main():
                write_plan(plan_file, plan)
        say = (lambda line: print(f"train_baseline: {line}", file=sys.stderr, flush=True)) if progress \
            else (lambda line: None)
        # beside the progress lines, so the log says why the run is this long
        say(f"compute parity, {plan.total_steps} steps at {plan.steps_per_s:.2f} step/s to match the "
            f"generative chain's {parity_seconds:.0f} s of training")
        cfg = replace(cfg, train=stretched(cfg.train, plan.total_steps))
        folder = run_folder(work_dir, KIND, cfg, condition, digest)  # one for the planned run and its codas
        result, plan = train_to_parity(lambda loop: train_for(loop, folder), cfg.train, plan,
                                       lambda grown: write_plan(plan_file, grown) if distributed.is_main() else None,
                                       say)
    trained = result.ema.ema_model.eval()
    test = RadioMapDataset(dataset_dir, "test", condition.encodings)
    metrics, pred, target = evaluate_baseline(trained, test)
    out = {f"test_{k}": v for k, v in metrics.items()}
    # the whole run's rate (resumed calls and codas included), not the last call's
    steps_per_s = result.step / result.train_seconds if result.train_seconds > 0 else 0.0
    out.update(steps_per_s=steps_per_s, train_seconds=result.train_seconds, device=device_name(device))
    if plan is not None:
        out.update(parity_metrics(plan, result.train_seconds))
    shown = spread_indices(len(test))
    cond = torch.stack([test[i]["cond"] for i in shown])
    figure = comparison_figure(target[shown], {"baseline": pred[shown]}, cond=cond, title="Baseline test predictions")
    return BaselineResult(trained, out, figure)


class PredictBaseline(torch.nn.Module):
    """The MLflow model view of the baseline: condition `[B, C, H, W]` -> gain `[B, 1, H, W]`
    in one pass, 0 on buildings."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return predict_baseline(self.model, cond)
