"""The resumable training loop shared by train_vae, train_ldm and train_baseline.

Each stage supplies its objective as `loss_fn`; the loop owns AdamW, gradient
accumulation and clipping, the learning-rate schedule, the EMA, autocast (bf16, or fp16 with
a loss scaler), `torch.compile`, logging, validation, checkpoints and resume. Step counts mean
"optimizer updates applied so far". The model trains where the caller placed it; batches follow.

Exact resume: every random draw of optimizer step `n` comes from seeds derived from
(config.seed, n, micro-batch), the batch order is a function of the batch index, and the
checkpoint holds the model, EMA, optimizer and process RNG states. So on CPU, a run
stopped at any checkpoint and resumed in a fresh process ends with the same weights as an
uninterrupted run. A dataset that draws random numbers itself (augmentation) must seed
them from the sample index to keep that property with DataLoader workers.

Under torchrun (`config.devices` > 1) each rank trains on its slice of every global
micro-batch through DistributedDataParallel; only rank 0 logs, validates and writes
checkpoints (see `distributed`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping

import torch
from torch import nn

from radiodiff import devices
from radiodiff.errors import RunFailure, UserError
from radiodiff.options import Precision
from radiodiff.progress import Progress
from radiodiff.training import distributed
from radiodiff.training.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from radiodiff.training.config import LoopConfig, OptimConfig
from radiodiff.training.ema import EMA
from radiodiff.training.lr_schedule import learning_rate, set_learning_rate
from radiodiff.training.rng import (
    STREAM_TRAIN_STEP,
    STREAM_VALIDATION,
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seeded_generator,
    seeded_global_rng,
)

LossFn = Callable[[nn.Module, Any, int, torch.Generator], "tuple[torch.Tensor, Mapping[str, float]]"]
ValFn = Callable[[nn.Module, int], Mapping[str, float]]
LogFn = Callable[[dict[str, float], int], None]
StopFn = Callable[[int, dict[str, float]], bool]
BatchesFn = Callable[[int], Iterable[Any]]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of `train_loop`. The live model passed in holds the final weights.

    - step: optimizer steps applied in total (including those before a resume).
    - train_loss: mean loss of the last logging window (None if no step ever ran).
    - val_metrics: the last `val_fn` result, keys without prefix ({} if never validated).
    - wall_time_s, steps_per_s: of this call only.
    - train_seconds: training wall time of the whole run, the calls before a resume included
      (each checkpoint carries the sum so far): what a stage reports as its training cost.
    - ema: the EMA, whose `ema_model` is usually the one to save or evaluate.
    - checkpoint: the newest checkpoint written or resumed from (None without a directory).
    - stopped_early: `should_stop` returned True.
    """

    step: int
    train_loss: float | None
    val_metrics: dict[str, float]
    wall_time_s: float
    steps_per_s: float
    ema: EMA
    checkpoint: Path | None
    stopped_early: bool = False
    train_seconds: float = 0.0


@dataclass(frozen=True)
class _Hooks:
    """The caller's callbacks and outputs, as passed to `train_loop`."""

    log: LogFn
    val_fn: ValFn | None
    should_stop: StopFn | None
    checkpoint_dir: Path | None
    extra: Mapping[str, Any] | None


@dataclass
class _Run:
    """Mutable state of one `train_loop` call, shared by its helpers."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA
    config: LoopConfig
    device: torch.device
    step: int = 0
    next_batch: int = 0
    train_loss: float | None = None
    val_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    stopped: bool = False
    micro_batches: Iterator[Any] | None = None
    ranks: distributed.Ranks = field(default_factory=distributed.Ranks)
    trainer: nn.Module | None = None  # what the forward passes call: the model, its DDP wrapper, compiled
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    micro_batch: int = 0  # samples in this rank's last micro-batch (for the out-of-memory message)
    name: str = "training"  # the stage, as failures name it
    seconds_before: float = 0.0  # training wall time of the calls before this resume
    started: float = field(default_factory=time.perf_counter)  # this call's start


def train_loop(
    *,
    model: nn.Module,
    loss_fn: LossFn,
    batches: BatchesFn,
    config: LoopConfig,
    log: LogFn,
    val_fn: ValFn | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    should_stop: StopFn | None = None,
    extra: Mapping[str, Any] | None = None,
    name: str = "training",
) -> TrainResult:
    """Train `model` in place for `config.total_steps` optimizer steps; resume if possible.

    - loss_fn(model, batch, step, generator) -> (loss, metrics): scalar loss tensor of one
      micro-batch and a dict of floats to log. `step` is the 0-based index of the optimizer
      step; `generator` is a torch.Generator on the model's device seeded from
      (config.seed, step, micro-batch): draw noise and timesteps from it. Torch's global
      generator is also seeded that way for the call (for dropout) and restored after.
    - batches(first) -> iterable of micro-batches, starting at global micro-batch `first`
      (0 on a fresh run); see `batching.loader_factory`. Tensors in a batch (also inside
      dicts, lists, tuples) are moved to the model's device.
    - log(metrics, step): called every `log_every` steps with "train/loss", "train/lr",
      "train/grad_norm", "train/<name>" (means over the window), and after each validation
      with "val/<name>".
    - val_fn(model, step) -> metrics: every `val_every` steps and at the end, under
      no_grad, with the EMA model if `config.val_on_ema`, with a seeded global generator.
    - should_stop(step, val_metrics) -> bool: called after each validation (the Optuna
      pruning hook). True stops after writing a checkpoint; an exception it raises (such
      as optuna.TrialPruned) propagates unchanged.
    - checkpoint_dir: if it holds a checkpoint, training resumes from the newest one (a
      corrupt one raises UserError naming it; delete it to fall back to the one before).
      Checkpoints are written every `checkpoint_every` steps and at the end.
    - extra: plain values stored in every checkpoint (e.g. the VAE latent scale factor).
    - name: the stage, as failures name it. CUDA out of memory and a non-finite loss raise
      `RunFailure` with what to change, not a traceback.

    Under torchrun, every rank calls this with the same arguments and `config.devices`
    equal to the world size; `log`, `val_fn` and `should_stop` then run on rank 0 only, and
    every rank gets rank 0's validation metrics and stop decision.
    """
    model.train()
    device = _device_of(model)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # in place: the parameters stay the same objects
    if config.tf32:
        devices.use_tf32(device)
    precision = devices.resolve_precision(config.precision, device)
    run = _Run(
        model=model,
        optimizer=_make_optimizer(model, config.optim),
        ema=EMA(model, decay=config.optim.ema_decay, start_step=config.optim.ema_start_step),
        config=config,
        device=device,
        ranks=_ranks(config),
        scaler=torch.amp.GradScaler(device.type) if precision is Precision.FP16 else None,
        name=name,
    )
    hooks = _Hooks(log, val_fn, should_stop, None if checkpoint_dir is None else Path(checkpoint_dir), extra)
    rng_state = _resume(run, hooks.checkpoint_dir)
    run.trainer = distributed.wrap_model(model)
    if config.compile:
        run.trainer = torch.compile(run.trainer)
    run.micro_batches = iter(batches(run.next_batch))
    if rng_state is not None:
        # After creating the iterator: a DataLoader may draw its base seed from the global RNG.
        restore_rng_state(rng_state)
    autocast = lambda: devices.autocast(device, precision)  # noqa: E731
    first_step = run.step
    run.started = started = time.perf_counter()
    window: dict[str, list[float]] = {}
    bar = Progress(config.total_steps, name, unit="step", initial=run.step, enabled=progress and run.ranks.is_main)
    try:
        while run.step < config.total_steps and not run.stopped:
            try:
                metrics, lr = _optimizer_step(run, loss_fn, autocast)
            except torch.OutOfMemoryError:
                raise RunFailure(out_of_memory_message(name, run.step + 1, run.micro_batch, config,
                                                       devices.peak_memory_gib(device))) from None
            run.step += 1
            for key, value in metrics.items():
                window.setdefault(key, []).append(value)
            bar.update(loss=metrics["loss"], lr=lr)
            _after_step(run, hooks, window, lr)
    finally:
        bar.close()
        # Drop the only reference to the iterator, so DataLoader workers stop now even if a
        # step raised (its traceback keeps `run` alive, not the iterator).
        run.micro_batches = None
    elapsed = time.perf_counter() - started
    return TrainResult(
        step=run.step,
        train_loss=run.train_loss,
        val_metrics=run.val_metrics,
        wall_time_s=elapsed,
        steps_per_s=(run.step - first_step) / elapsed if elapsed > 0 else 0.0,
        ema=run.ema,
        checkpoint=run.checkpoint,
        stopped_early=run.stopped,
        train_seconds=run.seconds_before + elapsed,
    )


def _optimizer_step(
    run: _Run, loss_fn: LossFn, autocast: Callable[[], ContextManager]
) -> tuple[dict[str, float], float]:
    """Accumulate `accum_steps` micro-batch gradients, clip, step AdamW, update the EMA."""
    config, model, ranks = run.config, run.model, run.ranks
    run.optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    total_loss = torch.zeros((), device=run.device)
    for micro in range(config.accum_steps):
        batch, share = distributed.shard_batch(_next_batch(run), ranks)
        batch = devices.to_device(batch, run.device, channels_last=config.channels_last)
        run.micro_batch = _leading_size(batch)
        seed = derive_seed(config.seed, STREAM_TRAIN_STEP, run.step, micro, *ranks.seed_keys)
        with distributed.gradient_sync(run.trainer, enabled=micro == config.accum_steps - 1):
            with seeded_global_rng(seed, run.device), autocast():
                loss, metrics = loss_fn(run.trainer, batch, run.step, seeded_generator(seed, run.device))
            # Mean over micro-batches, so k micro-batches of b equal one batch of k*b; DDP
            # averages over ranks, so weighting by share * world makes that the batch mean.
            scaled = loss * (share * ranks.world_size) / config.accum_steps
            (scaled if run.scaler is None else run.scaler.scale(scaled)).backward()
        total_loss += loss.detach().float() * share / config.accum_steps
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value) * share / config.accum_steps
    sums["loss"] = total_loss.item()
    sums = distributed.sum_over_ranks(sums)
    if not math.isfinite(sums["loss"]):
        raise RunFailure(f"{run.name}: the training loss is {sums['loss']} at step {run.step + 1}: lower "
                         "optim.lr or set optim.grad_clip (the last checkpoint holds the weights before it)")
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)  # clip (and log) the true gradient norm
    if config.optim.grad_clip is not None:
        sums["grad_norm"] = float(nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip))
    lr = _lr(config, run.step + 1)
    set_learning_rate(run.optimizer, lr)
    if run.scaler is None:
        run.optimizer.step()
    else:  # skips the step when the scaled gradients overflowed, and adapts the scale
        run.scaler.step(run.optimizer)
        run.scaler.update()
    run.ema.update(model, run.step + 1)
    return sums, lr


def _after_step(run: _Run, hooks: _Hooks, window: dict[str, list[float]], lr: float) -> None:
    """Validate, log and checkpoint when due; the final step always does all three."""
    config, step = run.config, run.step
    last = step == config.total_steps
    if hooks.val_fn is not None and (step % config.val_every == 0 or last):
        outcome = _validate_on_main(run, hooks) if run.ranks.is_main else None
        run.val_metrics, run.stopped = distributed.from_main(outcome)
    final = last or run.stopped
    if step % config.log_every == 0 or final:
        means = {key: sum(values) / len(values) for key, values in window.items()}
        window.clear()
        run.train_loss = means["loss"]
        if run.ranks.is_main:
            hooks.log({**{f"train/{key}": value for key, value in means.items()}, "train/lr": lr}, step)
    if hooks.checkpoint_dir is not None and (step % config.checkpoint_every == 0 or final):
        _save(run, hooks.checkpoint_dir, hooks.extra)


def _validate_on_main(run: _Run, hooks: _Hooks) -> tuple[dict[str, float], bool]:
    """Validate, log the metrics and ask `should_stop`: (metrics, stop)."""
    metrics = _validate(run, hooks.val_fn)
    hooks.log({f"val/{key}": value for key, value in metrics.items()}, run.step)
    return metrics, bool(hooks.should_stop is not None and hooks.should_stop(run.step, dict(metrics)))


def _validate(run: _Run, val_fn: ValFn) -> dict[str, float]:
    """Run `val_fn` without gradients, in eval mode, with a generator seeded by the step."""
    target = run.ema.ema_model if run.config.val_on_ema else run.model
    seed = derive_seed(run.config.seed, STREAM_VALIDATION, run.step)
    run.model.eval()
    try:
        with torch.no_grad(), seeded_global_rng(seed, run.device):
            metrics = val_fn(target, run.step)
    finally:
        run.model.train()
    return {key: float(value) for key, value in metrics.items()}


def _save(run: _Run, directory: Path, extra: Mapping[str, Any] | None) -> None:
    path = checkpoint_path(directory, run.step)
    if run.ranks.is_main:  # the ranks hold identical states: one writer
        save_checkpoint(
            path,
            model=run.model,
            ema=run.ema,
            optimizer=run.optimizer,
            step=run.step,
            rng=capture_rng_state(),
            extra=extra,
            loop_state={"next_batch": run.next_batch, "train_loss": run.train_loss, "val_metrics": run.val_metrics,
                        "grad_scaler": None if run.scaler is None else run.scaler.state_dict(),
                        "train_seconds": run.seconds_before + time.perf_counter() - run.started},
        )
        prune_checkpoints(directory, keep=run.config.keep_checkpoints)
    distributed.barrier()  # so that every rank's result names a file that exists
    run.checkpoint = path


def _resume(run: _Run, checkpoint_dir: Path | None) -> dict | None:
    """Load the newest checkpoint into `run` if there is one; return its RNG state."""
    path = None if checkpoint_dir is None else latest_checkpoint(checkpoint_dir)
    if path is None:
        return None
    ckpt = load_checkpoint(path, model=run.model, ema=run.ema, optimizer=run.optimizer)
    loop_state = ckpt.loop_state
    run.step, run.checkpoint = ckpt.step, ckpt.path
    run.next_batch = int(loop_state.get("next_batch", ckpt.step * run.config.accum_steps))
    run.train_loss = loop_state.get("train_loss")
    run.val_metrics = dict(loop_state.get("val_metrics") or {})
    run.seconds_before = float(loop_state.get("train_seconds") or 0.0)  # absent in checkpoints before it
    if run.scaler is not None and loop_state.get("grad_scaler"):
        run.scaler.load_state_dict(loop_state["grad_scaler"])
    return ckpt.rng


def _ranks(config: LoopConfig) -> distributed.Ranks:
    ranks = distributed.current()
    if ranks.world_size != config.devices:
        raise UserError(f"training is configured for {config.devices} device(s) but runs in "
                        f"{ranks.world_size} process(es): start it through its stage, which launches torchrun")
    return ranks


def _next_batch(run: _Run) -> Any:
    try:
        batch = next(run.micro_batches)
    except StopIteration:
        raise RuntimeError(f"`batches` ran out at step {run.step}; it must yield without end") from None
    run.next_batch += 1
    return batch


def _leading_size(batch: Any) -> int:
    """The batch dimension of the first tensor in a batch (0 if none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 0
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        size = _leading_size(value)
        if size:
            return size
    return 0


def out_of_memory_message(name: str, step: int, micro_batch: int, config: LoopConfig, peak_gib: float | None) -> str:
    """What a CUDA out-of-memory failure tells the user: the stage, the batch, the peak memory,
    and the change that keeps the effective batch (smaller micro-batches, more of them)."""
    peak = "" if peak_gib is None else f", peak {peak_gib:.1f} GiB allocated"
    smaller = max(micro_batch // 2, 1)
    return (f"{name}: CUDA out of memory at step {step} with micro-batches of {micro_batch} samples per device"
            f" (accum_steps {config.accum_steps}{peak}): halve the stage's data.batch_size and double "
            f"train.accum_steps to {2 * config.accum_steps} (micro-batches of {smaller}, the same effective batch)")


def _lr(config: LoopConfig, step: int) -> float:
    optim = config.optim
    return learning_rate(
        step,
        base_lr=optim.lr,
        min_lr=optim.min_lr,
        warmup_steps=optim.warmup_steps,
        total_steps=config.total_steps,
        power=optim.lr_power,
    )


def _make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay
    )


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters to train") from None
