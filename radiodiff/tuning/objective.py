"""One Optuna trial: sample the space, train the stage for the trial budget, report its
validation metric at every validation (so the pruner can stop it), return the last value."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from radiodiff.config import Params
from radiodiff.errors import UserError
from radiodiff.tuning.space import suggest, trial_config
from radiodiff.tuning.tracker import COMPLETE, FAILED, PRUNED, StudyRun, TrialRecord


class InvalidTrialConfig(UserError):
    """The sampled values together break a config check (say min_lr > lr): this trial fails,
    the study goes on."""


@dataclass(frozen=True, kw_only=True)
class TrialInputs:
    """What every trial of `train_ldm` reads: the prepared dataset and the trained VAE; trials
    keep their checkpoints in a temporary folder under `work_dir`."""

    dataset_dir: Path
    vae_path: Path
    work_dir: Path


def make_objective(params: Params, *, inputs: TrialInputs, run: StudyRun,
                   progress: bool = False) -> Callable[[optuna.Trial], float]:
    """The objective of the study described by `params.tune`; each trial is a nested run of `run`."""
    tune = params.tune

    def objective(trial: optuna.Trial) -> float:
        sampled = {spec.name: suggest(trial, spec) for spec in tune.params}
        with run.trial(trial.number, sampled) as record:
            try:
                config = trial_config(params, sampled)
            except UserError as exc:
                record.finish(FAILED, None)
                raise InvalidTrialConfig(str(exc)) from None
            return _run_trial(trial, config, inputs, record, progress)

    return objective


def _run_trial(trial: optuna.Trial, config: Params, inputs: TrialInputs, record: TrialRecord,
               progress: bool) -> float:
    """Train, tell the record how it ended, and hand Optuna the value (or the prune)."""
    try:
        value, test_metrics = _train(trial, config, inputs, record, progress)
    except optuna.TrialPruned:
        record.finish(PRUNED, None)
        raise
    except BaseException:
        record.finish(FAILED, None)
        raise
    record.log(test_metrics)
    for key, metric in test_metrics.items():
        trial.set_user_attr(key, metric)
    record.finish(COMPLETE if math.isfinite(value) else FAILED, value)
    return value


def _train(trial: optuna.Trial, config: Params, inputs: TrialInputs, record: TrialRecord,
           progress: bool) -> tuple[float, dict[str, float]]:
    """Train the denoiser for the trial budget: (last validation metric, test metrics)."""
    from radiodiff.stages.ldm import train_ldm

    tune = config.tune
    reported: list[float] = []

    def should_stop(step: int, val_metrics: dict[str, float]) -> bool:
        value = _objective_value(val_metrics, tune.metric)
        trial.report(value, step)
        reported.append(value)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} ({tune.metric} {value:.4g})")
        return False

    inputs.work_dir.mkdir(parents=True, exist_ok=True)
    # A fresh folder per trial: the stage resumes from any checkpoint it finds, and two trials
    # that drew the same values must not share one.
    with tempfile.TemporaryDirectory(prefix=f"trial{trial.number}-", dir=inputs.work_dir) as work:
        result = train_ldm(config.ldm, config.condition, dataset_dir=inputs.dataset_dir, vae_path=inputs.vae_path,
                           work_dir=Path(work), log=record.log, progress=progress, should_stop=should_stop)
    return reported[-1], result.metrics


def _objective_value(val_metrics: dict[str, float], metric: str) -> float:
    if metric not in val_metrics:
        raise UserError(f"tune.metric {metric!r} is not a validation metric of the stage "
                        f"(it reports: {', '.join(sorted(val_metrics))})")
    return float(val_metrics[metric])
