"""An Optuna study in MLflow: one parent run per study, one nested run per trial.

The parent (stage `tune`) is tagged with the study's name and uid and re-opened when the study
is resumed, so every session's trials land under it. A trial's run holds its sampled params,
its training and validation curves, its state tag (complete, pruned, failed) and its value; it
ends FINISHED, KILLED when pruned, FAILED when it raised. After each session the parent gets
the best params (tags `best.<key>`, since they change as the study grows and MLflow params
are write-once), the best value, trial counts, the optimisation-history and importance
figures, and the best-params files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from radiodiff.tracking import (
    EXPERIMENT,
    StageRun,
    _git_commit,
    configure,
    flatten_params,
    stage_run,
)
from radiodiff.tracking.crashes import fail_orphaned_runs, owner_tags

STUDY_STAGE, TRIAL_STAGE = "tune", "tune_trial"
TAG_STUDY, TAG_UID, TAG_TRIAL, TAG_STATE = "study", "study_uid", "trial", "state"


class MlflowTrialRecord(StageRun):
    """The nested run of one trial: `log` for curves, `finish` for the outcome."""

    def __init__(self, run: Any) -> None:
        super().__init__(run)
        self.state: str | None = None

    def finish(self, state: str, value: float | None) -> None:
        """Tag the trial's state and log its objective value."""
        self.state = state
        mlflow.set_tag(TAG_STATE, state)
        if value is not None:
            self.log({"value": value})


class MlflowStudyRun(StageRun):
    """The parent run of a study (active while trials run)."""

    def __init__(self, run: Any, *, name: str, uid: str, tags: Mapping[str, str]) -> None:
        super().__init__(run)
        self.name, self.uid, self.tags = name, uid, dict(tags)

    @contextlib.contextmanager
    def trial(self, number: int, params: Mapping[str, Any]) -> Iterator[MlflowTrialRecord]:
        """A nested run for trial `number`, with its sampled `params` (dotted keys)."""
        tags = {**self.tags, "stage": TRIAL_STAGE, TAG_STUDY: self.name, TAG_UID: self.uid, TAG_TRIAL: str(number),
                "git_commit": _git_commit(), **owner_tags()}
        run = mlflow.start_run(run_name=f"trial {number}", nested=True, tags=tags)
        record = MlflowTrialRecord(run)
        try:
            mlflow.log_params(flatten_params(dict(params)))
            yield record
        except BaseException:
            mlflow.end_run("KILLED" if record.state == "pruned" else "FAILED")
            raise
        mlflow.end_run("FINISHED" if record.state in (None, "complete") else "FAILED")

    def log_summary(self, *, best_params: Mapping[str, Any] | None, best_value: float | None,
                    counts: Mapping[str, int], figures: Mapping[str, Any], files: Sequence[Path]) -> None:
        """Best params and value so far, trial counts by state, figures and files, on the parent."""
        step = sum(counts.values())
        self.log({f"trials_{state}": count for state, count in counts.items()}, step=step)
        if best_params is not None:
            mlflow.set_tags({f"best.{key}": str(value) for key, value in best_params.items()})
            self.log({"best_value": best_value}, step=step)
        for name, figure in figures.items():
            mlflow.log_figure(figure, name)
        for path in files:
            self.log_artifact(path, folder="best")


class MlflowStudyTracker:
    """Tracks studies in the project's MLflow store (see `radiodiff.tracking.configure`)."""

    def __init__(self, *, profile: str = "default", tags: Mapping[str, str] | None = None) -> None:
        self.profile, self.tags = profile, dict(tags or {})

    @contextlib.contextmanager
    def study(self, name: str, uid: str, config: Any) -> Iterator[MlflowStudyRun]:
        """The parent run of study `uid`: found by its tag and re-opened, or opened new."""
        configure()
        experiment_id = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
        fail_orphaned_runs(TRIAL_STAGE, experiment_id)
        # Set by pipelines/flows.py: the trials link to the Prefect flow run as the parent does.
        links = {"prefect_flow_run_id": os.environ["RADIODIFF_FLOW_RUN_ID"]} if os.environ.get("RADIODIFF_FLOW_RUN_ID") else {}
        links.update(self.tags)
        with stage_run(STUDY_STAGE, config, profile=self.profile, tags={**links, TAG_STUDY: name, TAG_UID: uid},
                       run_id=find_study_run(uid, experiment_id)):
            yield MlflowStudyRun(mlflow.active_run(), name=name, uid=uid, tags=links)


def find_study_run(uid: str, experiment_id: str) -> str | None:
    """The id of the parent run of study `uid`, if one was opened before."""
    runs = MlflowClient().search_runs([experiment_id], max_results=1, order_by=["attributes.start_time ASC"],
                                     filter_string=f"tags.stage = '{STUDY_STAGE}' and tags.{TAG_UID} = '{uid}'")
    return runs[0].info.run_id if runs else None
