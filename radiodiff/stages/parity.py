"""Compute parity: the supervised peer trains for at least the generative chain's wall time.

A diffusion model that "beats the baseline" only because it trained four times longer proves
nothing, so `train_baseline` can size its run from what the generative chain actually cost on
this machine: the training seconds that train_vae, train_ldm and tune_tail report (their
`train_seconds`, resumed calls included). The baseline's own rate is measured on a throwaway
copy of it for a few steps, and its `total_steps` becomes enough steps to last that long, with
a margin for a machine whose speed drifts (never fewer than params ask). Step counts, not a
clock, end the planned run, so the learning-rate schedule ends where it should and a resumed run
is exact. A machine that speeds up within the stage can still finish the plan early; the run
then goes on at the schedule's floor learning rate (`optim.min_lr`) for enough more steps to
reach the time (the coda), so "at least" holds on any machine. The plan, coda included, is
written next to the resume folders, so a restart trains to the same step count.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from torch import nn

from radiodiff.errors import UserError
from radiodiff.io import atomic_write_text
from radiodiff.training import distributed
from radiodiff.training.config import LoopConfig
from radiodiff.training.loop import TrainResult, train_loop

# The stages whose training is the generative model's cost: the latent space, the denoiser,
# and the tail fine-tuning the served sampler uses.
GENERATIVE_STAGES = ("train_vae", "train_ldm", "tune_tail")
CALIBRATION_WARMUP = 20  # steps run before the clock starts
CALIBRATION_STEPS = 60  # steps timed: seconds of work, enough to average a noisy machine
# Planned steps are this much over the measured rate's: in two fresh-clone demos the run itself
# went 4% and 21% faster than its probe (174 s trained against 181 s with no margin, 157 s
# against 173 s with 10%), and "at least" is the point.
PLAN_MARGIN = 1.25
# Fewest steps a coda adds: each one validates and checkpoints at its end.
CODA_MIN_STEPS = 10


@dataclass(frozen=True)
class ParityPlan:
    """How long the baseline trains to match the generative chain.

    - generative_seconds: training wall time of GENERATIVE_STAGES, summed (s).
    - steps_per_s: the baseline's measured rate on this machine (optimizer steps per s).
    - total_steps: the step count that lasts at least `generative_seconds` at that rate, and
      at least the configured one; the learning-rate schedule spans these.
    - coda_steps: steps added after `total_steps` because the run had not yet lasted
      `generative_seconds`, at the schedule's floor learning rate (`coda_loop`).
    """

    generative_seconds: float
    steps_per_s: float
    total_steps: int
    coda_steps: int = 0


def generative_train_seconds(metrics_dir: Path) -> float:
    """Sum of the `train_seconds` the generative stages wrote in `metrics_dir` (s); a missing
    or unreadable file is a UserError naming the stage to run first."""
    total = 0.0
    for stage in GENERATIVE_STAGES:
        path = Path(metrics_dir) / f"{stage}.json"
        try:
            total += float(json.loads(path.read_text())["train_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"baseline.compute_parity needs {path} with train_seconds: run {stage} first, "
                            "or set baseline.compute_parity: false") from None
    return total


def plan_steps(generative_seconds: float, steps_per_s: float, configured: int) -> int:
    """Steps that last `generative_seconds` at `steps_per_s` with `PLAN_MARGIN` to spare, never
    below `configured`."""
    if generative_seconds < 0 or steps_per_s <= 0:
        raise ValueError(f"need generative_seconds >= 0 and steps_per_s > 0, got {generative_seconds}, {steps_per_s}")
    return max(configured, math.ceil(generative_seconds * steps_per_s * PLAN_MARGIN))


def measure_steps_per_second(model: nn.Module, loss_fn: Callable, batches: Callable, loop: LoopConfig,
                             steps: int = CALIBRATION_STEPS, warmup: int = CALIBRATION_WARMUP) -> float:
    """Steady optimizer steps per second of `loss_fn` on a copy of `model` (the model is
    untouched): the same loop, batches and precision, without validation or checkpoints, timed
    from step `warmup` to step `warmup + steps`. The first steps (allocations, the loader's
    start) are left out: counted in, they lower the rate and so plan too few steps."""
    total = warmup + steps
    probe = replace(loop, total_steps=total, log_every=1, val_every=total, checkpoint_every=total,
                    optim=replace(loop.optim, warmup_steps=0))
    stamps: dict[int, float] = {}
    train_loop(model=copy.deepcopy(model), loss_fn=loss_fn, batches=batches, config=probe,
               log=lambda metrics, step: stamps.setdefault(step, time.perf_counter()), progress=False,
               name="parity calibration")
    if total not in stamps:  # a DDP rank other than 0 logs nothing: rank 0's rate is the one used
        return math.nan
    return steps / (stamps[total] - stamps[warmup])


def stretched(loop: LoopConfig, total_steps: int) -> LoopConfig:
    """`loop` run for `total_steps`, its logging, validation and checkpoint intervals stretched
    by the same factor: as many curve points, validations and checkpoints as params ask for."""
    factor = total_steps / loop.total_steps
    return replace(loop, total_steps=total_steps, **{name: max(1, round(getattr(loop, name) * factor))
                                                      for name in ("log_every", "val_every", "checkpoint_every")})


def coda_loop(loop: LoopConfig, coda_steps: int) -> LoopConfig:
    """`loop`, the planned run, followed by `coda_steps` more steps at its floor learning rate
    `optim.min_lr`: the planned schedule has ended there, and the coda neither warms it up again
    nor decays it anew, so the planned steps train exactly as they did without it."""
    if coda_steps <= 0:
        return loop
    return replace(loop, total_steps=loop.total_steps + coda_steps,
                   optim=replace(loop.optim, lr=loop.optim.min_lr, warmup_steps=0))


def train_to_parity(train: Callable[[LoopConfig], TrainResult], loop: LoopConfig, plan: ParityPlan,
                    save_plan: Callable[[ParityPlan], None], say: Callable[[str], None]) -> tuple[TrainResult, ParityPlan]:
    """Train the planned `loop` (already `stretched` to `plan.total_steps`), then as many codas
    as it takes for the run's `train_seconds` to reach `plan.generative_seconds`.

    - train(loop) -> TrainResult: one resumable training call (the same checkpoint folder for
      every call: each resumes where the last ended).
    - save_plan(plan): stores a plan whose coda grew (on rank 0), before the coda trains, so a
      restart trains to the same step count.
    - say(line): tells the log why the run goes on.

    Each coda is sized from the rate of the call before it, with `PLAN_MARGIN`. Returns the
    last call's result and the plan as it ended. Under torchrun rank 0's clock decides.
    """
    result = train(loop)
    if plan.coda_steps:  # a restart's stored coda: the same steps at the same learning rates
        result = train(coda_loop(loop, plan.coda_steps))
    while True:
        short = plan.generative_seconds - result.train_seconds
        rate = result.steps_per_s if result.steps_per_s > 0 else plan.steps_per_s
        more = distributed.from_main(max(CODA_MIN_STEPS, math.ceil(short * rate * PLAN_MARGIN)) if short > 0 else 0)
        if more == 0:
            return result, plan
        say(f"{loop.total_steps + plan.coda_steps} steps took {result.train_seconds:.0f} s of the generative "
            f"chain's {plan.generative_seconds:.0f} s: {more} more at the floor learning rate {loop.optim.min_lr:.1e}")
        plan = replace(plan, coda_steps=plan.coda_steps + more)
        save_plan(plan)
        result = train(coda_loop(loop, plan.coda_steps))


def read_plan(plan_file: Path, generative_seconds: float) -> ParityPlan | None:
    """The plan stored in `plan_file` if it was made for this generative time, else None."""
    try:
        stored = ParityPlan(**json.loads(Path(plan_file).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return stored if math.isclose(stored.generative_seconds, generative_seconds, rel_tol=1e-9) else None


def write_plan(plan_file: Path, plan: ParityPlan) -> None:
    """Store `plan` (atomically) so a restarted stage trains to the same step count."""
    atomic_write_text(Path(plan_file), json.dumps(asdict(plan), indent=2) + "\n")


def parity_metrics(plan: ParityPlan, train_seconds: float) -> dict[str, Any]:
    """What the stage reports beside its own train_seconds: both costs and, when the chain took
    any time, their ratio."""
    metrics: dict[str, Any] = {"generative_train_seconds": plan.generative_seconds, "parity_steps": plan.total_steps,
                               "parity_coda_steps": plan.coda_steps}
    if plan.generative_seconds > 0:
        metrics["train_seconds_over_generative"] = train_seconds / plan.generative_seconds
    return metrics
