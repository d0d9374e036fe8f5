"""Prefect flows that drive the DVC pipeline: one task per stage, DVC decides what re-runs.

Each task runs `dvc repro <stage>` in a subprocess, so DVC's cache skips what is up to date and
dvc.lock stays the record of what produced each output. A profile other than `default`, or any
params override, runs the stages as one DVC experiment instead (`dvc exp run --temp -S ...`,
one task): the params change lives in the experiment's commit, never in the work tree (see
`stage_command`).

The stage processes get `RADIODIFF_FLOW_RUN_ID` (and `RADIODIFF_PROFILE`); `radiodiff.tracking`
tags their MLflow runs with it, so a person goes from an MLflow run to its Prefect flow run.
They also get the id of the task that runs them, and create their own flow runs as its
children (`pipelines._stage.rank_flow`): the pipeline run is one tree of subflows in the UI.
Deployments of these flows are in prefect.yaml.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import yaml

from radiodiff.offline import apply_offline_defaults

apply_offline_defaults()  # before prefect, which reads its switches at import

from prefect import flow, task  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from radiodiff.errors import RUN_FAILURE_EXIT, USER_ERROR_EXIT, UserError  # noqa: E402
from radiodiff.profiles import hydra_value, profile_path, profile_sets  # noqa: E402

from pipelines._stage import PARENT_TASK_RUN_ENV  # noqa: E402

# A stage's exit codes that a retry would only repeat (pipelines/_stage.run_stage): a UserError,
# and a RunFailure (CUDA out of memory, a diverged loss).
DETERMINISTIC_EXITS = frozenset({USER_ERROR_EXIT, RUN_FAILURE_EXIT})
STAGE_EXIT = re.compile(r"failed to run: .*, exited with (-?\d+)")


class StageFailed(RuntimeError):
    """A DVC stage task failed; `transient` says whether running it again may help."""

    def __init__(self, stage: str, returncode: int, stderr_tail: str) -> None:
        self.stage, self.returncode, self.stderr_tail = stage, returncode, stderr_tail
        self.transient = is_transient(returncode, stderr_tail)
        super().__init__(f"stage {stage} failed (dvc exit {returncode}, "
                         f"{'transient' if self.transient else 'not retried'}):\n{stderr_tail}")

    def __reduce__(self) -> tuple:  # picklable, should Prefect persist the failed state
        return type(self), (self.stage, self.returncode, self.stderr_tail)


def is_transient(returncode: int, stderr_tail: str) -> bool:
    """Whether a failed `dvc repro`/`dvc exp run` is worth a retry: DVC killed by a signal, the
    stage process crashed or was killed (any exit but a user error's 2 or a run failure's 3),
    or a lock held by another DVC process. DVC's own refusals (unknown stage, bad `-S`) are not."""
    if returncode < 0 or "Unable to acquire lock" in stderr_tail:
        return True
    stage_exit = STAGE_EXIT.search(stderr_tail)
    return stage_exit is not None and int(stage_exit.group(1)) not in DETERMINISTIC_EXITS


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except StageFailed as exc:
        return exc.transient
    except Exception:  # anything else is a bug or a refusal: do not repeat it
        return False
    return False


def pipeline_stages(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The stage names of dvc.yaml in pipeline (file) order."""
    return list(yaml.safe_load(dvc_yaml.read_text())["stages"])


def stage_command(stages: list[str], *, sets: list[str], experiment: str | None, single_item: bool = False
                  ) -> list[str]:
    """The DVC command of a task. Without an experiment name: `dvc repro <stage>` (one stage) in
    the work tree. With one: `dvc exp run --temp` over all `stages`, which runs them in a
    scratch copy of the work tree with params `sets` applied and commits the result as the one
    experiment `experiment`: a pipeline run is one experiment, and the work tree (params.yaml
    included) is left as it was. `single_item`: run only the named stages, even when stages
    before them are stale."""
    dvc = [sys.executable, "-m", "dvc"]
    only = ["--single-item"] if single_item else []
    if experiment is None:
        if len(stages) != 1:
            raise ValueError(f"dvc repro runs one stage per task, got {stages}")
        return [*dvc, "repro", *only, *stages]
    set_args = [arg for item in sets for arg in ("-S", item)]
    return [*dvc, "exp", "run", "--temp", "-n", experiment, *only, *set_args, *stages]


def stage_env(project: Path, *, flow_run_id: str, profile: str) -> dict[str, str]:
    """The stage processes' environment: the flow-run link, this interpreter's `python` first on
    PATH (dvc.yaml's commands call `python`), and the project's MLflow store by absolute path
    (an experiment runs in a scratch copy whose own `mlruns/` would be thrown away)."""
    env = dict(os.environ, RADIODIFF_FLOW_RUN_ID=flow_run_id, RADIODIFF_PROFILE=profile)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    (project / "mlruns").mkdir(exist_ok=True)
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    env.setdefault("RADIODIFF_ARTIFACT_ROOT", str(project / "mlruns" / "artifacts"))
    return env


@task(task_run_name="{stage}", retries=2, retry_delay_seconds=30, retry_condition_fn=_retry_transient)
def run_stage(stage: str, command: list[str], env: dict[str, str], cwd: str) -> str:
    """Run one stage's DVC command; its stdout streams through, stderr too (last lines kept).
    The stage's flow run becomes a child of this task run (`pipelines._stage.rank_flow`)."""
    from prefect.runtime import task_run

    env = dict(env, **{PARENT_TASK_RUN_ENV: str(task_run.id)})
    process = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True, errors="replace")
    tail: deque[str] = deque(maxlen=40)
    for line in process.stderr:
        sys.stderr.write(line)
        tail.append(line)
    if process.wait() != 0:
        raise StageFailed(stage, process.returncode, "".join(tail))
    return stage


def _param_sets(project: Path, profile: str, overrides: dict[str, Any]) -> list[str]:
    try:
        sets = profile_sets(profile, project)
    except UserError as exc:
        raise ValueError(str(exc)) from None
    # Plain `key=value`: DVC refuses a key params.yaml lacks, so a typo fails before any work.
    return sets + [f"{key}={hydra_value(value, key)}" for key, value in overrides.items()]


def run_pipeline(stages: list[str] | None, *, profile: str, overrides: dict[str, Any],
                 single_item: frozenset[str] = frozenset()) -> list[str]:
    """Run `stages` (None: all) in pipeline order inside the current flow run, one task per
    stage, or, for a profile or overrides, one task running them all as one DVC experiment named
    after the flow run; returns the stages run. The flow runs in the project directory (the
    deployments' pull step)."""
    project = Path.cwd()
    if not (project / "dvc.yaml").is_file():
        raise ValueError(f"{project} has no dvc.yaml: run from the project (workers: RADIODIFF_PROJECT_DIR)")
    order = pipeline_stages(project / "dvc.yaml")
    unknown = sorted(set(stages or ()) - set(order))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; dvc.yaml has {order}")
    chosen = [stage for stage in order if stages is None or stage in stages]
    sets = _param_sets(project, profile, overrides)
    as_experiment = profile != "default" or bool(overrides)
    if as_experiment and not (project / ".git").exists():
        raise ValueError("a profile or overrides run as DVC experiments, which need a Git repository")
    env = stage_env(project, flow_run_id=str(flow_run.id), profile=profile)
    if as_experiment:
        command = stage_command(chosen, sets=sets, experiment=str(flow_run.name),
                                single_item=bool(single_item & set(chosen)))
        run_stage.with_options(task_run_name="experiment")("experiment", command, env, str(project))
        return chosen
    for stage in chosen:
        command = stage_command([stage], sets=sets, experiment=None, single_item=stage in single_item)
        run_stage(stage, command, env, str(project))
    return chosen


@flow(name="radiodiff-pipeline")
def pipeline_flow(stages: list[str] | None = None, profile: str = "default",
                  overrides: dict[str, Any] | None = None) -> list[str]:
    """The whole pipeline (or the `stages` subset), each stage a task that DVC may skip.

    profile: `default` (params.yaml) or a profiles/NAME.yaml (`study`, `paper`), as a DVC experiment.
    overrides: dotted params -> value, e.g. {"ldm.train.total_steps": 200} (a DVC experiment).
    """
    return run_pipeline(stages, profile=profile, overrides=overrides or {})


@flow(name="radiodiff-bank-refresh")
def bank_refresh_flow(profile: str = "default", overrides: dict[str, Any] | None = None) -> list[str]:
    """Add the midpoints of new scenes: `prepare` (re-runs when its params changed, e.g. more
    maps), then `build_bank` alone with the models as they are. The bank persists between runs
    and the build is resumable, so only the missing midpoints are computed; `dvc status` then
    shows the training stages stale, and the full pipeline retrains when wanted."""
    return run_pipeline(["prepare", "build_bank"], profile=profile, overrides=overrides or {},
                        single_item=frozenset({"build_bank"}))


@flow(name="radiodiff-evaluate")
def evaluate_flow(profile: str = "default", overrides: dict[str, Any] | None = None) -> list[str]:
    """`dvc repro evaluate`: evaluate, after whatever of its upstream DVC finds stale."""
    return run_pipeline(["evaluate"], profile=profile, overrides=overrides or {})


@flow(name="radiodiff-tune")
def tune_deployment_flow(n_trials: int | None = None, profile: str = "default", study_db: str | None = None) -> Any:
    """Add `n_trials` (default: params `tune.n_trials`) trials to the Optuna study of
    pipelines/tune.py, with the search space of the profile's params file; a subflow."""
    project = Path.cwd()
    try:
        params_path = profile_path(profile, project) or Path("params.yaml")
    except UserError as exc:
        raise ValueError(str(exc)) from None
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))  # the flow-run process started elsewhere: use this checkout's code
    from pipelines.tune import tune_flow
    os.environ["RADIODIFF_FLOW_RUN_ID"] = str(flow_run.id)  # the trials' MLflow runs link back here
    return tune_flow(params_path=str(params_path), n_trials=n_trials, study_db=study_db)
