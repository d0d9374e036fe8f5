"""`run_tuning`: open (or resume) the study in its sqlite file, run more trials, write the best
params where `dvc exp run` can apply them, and hand the tracker the study's summary."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from radiodiff.config import Params
from radiodiff.data.assemble import INDEX_FILE
from radiodiff.errors import RunFailure, UserError
from radiodiff.progress import Progress
from radiodiff.tuning.best import write_best
from radiodiff.tune_config import Direction, PrunerKind, TuneConfig
from radiodiff.tuning.objective import InvalidTrialConfig, TrialInputs, make_objective
from radiodiff.tuning.report import TrialRow, study_figures, trial_rows
from radiodiff.tuning.space import check_space
from radiodiff.tuning.storage import StudyStorage, open_storage, parse_storage
from radiodiff.tuning.tracker import COMPLETE, FAILED, PRUNED, NullTracker, StudyTracker

UID_ATTR = "radiodiff_uid"  # study user attribute: names the study's tracking run across sessions


@dataclass(frozen=True)
class TuneResult:
    """A study after a tuning session: every trial so far, the best one, the files written."""

    study: str
    storage: str
    metric: str
    rows: tuple[TrialRow, ...]
    best: TrialRow | None
    best_files: tuple[Path, ...]


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """The pruner of the `tune.pruner` settings."""
    cfg = tune.pruner
    if cfg.kind is PrunerKind.NONE:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_steps,
                                       interval_steps=cfg.interval_steps)


def open_study(tune: TuneConfig, storage: StudyStorage, *, pruner: optuna.pruners.BasePruner | None = None
               ) -> optuna.Study:
    """Create the study in `storage`, or load it if it exists (`load_if_exists`).

    The TPE seed is derived from `tune.seed` and the number of trials already in the study: a
    resumed session with the bare seed would replay the first session's random start-up draws.
    """
    study = optuna.create_study(study_name=tune.study, storage=open_storage(storage, tune),
                                direction=tune.direction.value, load_if_exists=True,
                                pruner=pruner or make_pruner(tune))
    done = len(study.trials)
    seed = int(np.random.SeedSequence([tune.seed, done]).generate_state(1)[0])
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)
    if UID_ATTR not in study.user_attrs:
        study.set_user_attr(UID_ATTR, uuid.uuid4().hex)
    return study


def run_tuning(params: Params, *, inputs: TrialInputs, n_trials: int | None = None, storage: str | None = None,
               tracker: StudyTracker | None = None, pruner: optuna.pruners.BasePruner | None = None,
               progress: bool = False, on_trial: Callable[[TrialRow], Any] | None = None) -> TuneResult:
    """Run `n_trials` (default `tune.n_trials`) more trials of the study of `params.tune`.

    The best params go to `best_params.yaml` and `best_params.args` beside the study file.
    `pruner` replaces the configured one (tests force pruning with it).
    """
    tune = params.tune
    check_space(params)
    _check_inputs(inputs)
    storage = parse_storage(str(storage or tune.storage))
    study = open_study(tune, storage, pruner=pruner)
    count = n_trials or tune.n_trials
    trials = Progress(count, "tune", unit="trial")

    def after_trial(finished: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        row = trial_rows([trial])[0]
        complete = [t.value for t in finished.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = (min if tune.direction is Direction.MINIMIZE else max)(complete) if complete else None
        trials.update(last=f"{row.number} {row.state}", best=best)
        if on_trial is not None:
            on_trial(row)

    with (tracker or NullTracker()).study(study.study_name, study.user_attrs[UID_ATTR], tune) as run, trials:
        study.optimize(make_objective(params, inputs=inputs, run=run, progress=progress),
                       n_trials=count, catch=(InvalidTrialConfig, RunFailure), callbacks=[after_trial])
        result = _summarize(study, tune, storage)
        best = result.best
        figures = study_figures(study)
        run.log_summary(best_params=None if best is None else best.params, best_value=None if best is None else best.value,
                        counts=state_counts(result.rows), figures=figures, files=result.best_files)
        _close(figures)
    return result


def _summarize(study: optuna.Study, tune: TuneConfig, storage: StudyStorage) -> TuneResult:
    rows = tuple(trial_rows(study.trials))
    complete = [row for row in rows if row.state == COMPLETE]
    best = None
    files: tuple[Path, ...] = ()
    if complete:
        best = next(row for row in rows if row.number == study.best_trial.number)
        files = write_best(storage.files_dir, study=tune.study, storage=str(storage), metric=tune.metric,
                           trial=best.number, value=best.value, params=best.params)
    return TuneResult(tune.study, str(storage), tune.metric, rows, best, files)


def state_counts(rows: tuple[TrialRow, ...]) -> dict[str, int]:
    """How many trials ended complete, pruned and failed (and in any other state seen)."""
    counts = {state: 0 for state in (COMPLETE, PRUNED, FAILED)}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    return counts


def _check_inputs(inputs: TrialInputs) -> None:
    if not (inputs.dataset_dir / INDEX_FILE).is_file():
        raise UserError(f"no prepared dataset at {inputs.dataset_dir}: run `dvc repro prepare` first")
    if not inputs.vae_path.is_file():
        raise UserError(f"no VAE at {inputs.vae_path}: run `dvc repro train_vae` first")


def _close(figures: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for figure in figures.values():
        plt.close(figure)
