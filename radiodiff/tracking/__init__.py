"""The one module that talks to MLflow: one run per stage, params from the config dataclass.

Store: `sqlite:///mlruns/mlflow.db` (MLflow's plain `./mlruns` file store is switched off in
current MLflow), artifacts under `mlruns/artifacts`. `MLFLOW_TRACKING_URI` overrides the
store (tests point it at a temporary folder). Telemetry is off unless the user turned it on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from radiodiff.offline import apply_offline_defaults

apply_offline_defaults()  # before mlflow, which reads its switches at import

import mlflow  # noqa: E402

from radiodiff.tracking.crashes import fail_orphaned_runs, owner_tags, sigterm_raises  # noqa: E402
from radiodiff.tracking.relocate import relocate_store  # noqa: E402
from radiodiff.typed_yaml import plain  # noqa: E402

EXPERIMENT = "radiodiff"
DEFAULT_STORE = "mlruns"


def flatten_params(config: Any, prefix: str = "") -> dict[str, str]:
    """A config dataclass (or mapping) as flat `a.b.c -> str` pairs, Enums by value."""
    flat: dict[str, str] = {}
    for key, value in plain(config).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def params_hash(flat: Mapping[str, str]) -> str:
    """A short stable hash of flattened params, for tagging runs that share a config."""
    return hashlib.sha256(json.dumps(dict(flat), sort_keys=True).encode()).hexdigest()[:12]


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def configure(store: str | Path = DEFAULT_STORE) -> str:
    """Point MLflow at the project store (or `MLFLOW_TRACKING_URI`) and make the experiment."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    store = Path(store).resolve()
    if not uri:
        store.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{store / 'mlflow.db'}"
        if "RADIODIFF_ARTIFACT_ROOT" not in os.environ:
            relocate_store(store, EXPERIMENT)  # a moved checkout: its runs' artifacts moved with it
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        artifacts = Path(os.environ.get("RADIODIFF_ARTIFACT_ROOT", store / "artifacts")).resolve()
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return uri


class StageRun:
    """Logging handle of one stage's run; `log(metrics, step)` suits training loops."""

    def __init__(self, run: Any) -> None:
        self.run_id: str = run.info.run_id

    def log(self, metrics: Mapping[str, float | str], step: int | None = None) -> None:
        """Log numeric metrics (non-finite values are skipped: MLflow rejects them); a text
        value (the device a stage ran on) becomes a tag of the run."""
        text = {k: v for k, v in metrics.items() if isinstance(v, str)}
        clean = {k: float(v) for k, v in metrics.items()
                 if k not in text and v is not None and float(v) == float(v)}
        mlflow.log_metrics(clean, step=step)
        if text:
            mlflow.set_tags(text)

    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure as an image artifact `name` (e.g. `samples.png`)."""
        mlflow.log_figure(figure, name)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        """Copy a file or folder into the run's artifacts."""
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=folder)
        else:
            mlflow.log_artifact(str(path), artifact_path=folder)

    def log_artifact_once(self, path: str | Path, folder: str, digest: str) -> str:
        """Log `path` under `folder` unless a run of the experiment already logged content of
        this `digest`; either way the run is tagged `{folder}_sha256` and `{folder}_run` (the
        run whose artifacts hold it). Returns that run's id. Keeps a bank, logged by every
        build that leaves it unchanged, from being copied into every run."""
        experiment = mlflow.get_run(self.run_id).info.experiment_id
        earlier = mlflow.search_runs([experiment], filter_string=f"tags.`{folder}_sha256` = '{digest}'",
                                     output_format="list", max_results=50)
        holder = next((r.info.run_id for r in earlier if r.data.tags.get(f"{folder}_run") == r.info.run_id), None)
        if holder is None:
            self.log_artifact(path, folder=folder)
            holder = self.run_id
        mlflow.set_tags({f"{folder}_sha256": digest, f"{folder}_run": holder})
        return holder

    def log_model(self, module: Any, name: str, input_example: Any) -> None:
        """Log a torch module as an MLflow model (see `log_torch_model`)."""
        log_torch_model(module, name, input_example)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add tags to the run."""
        mlflow.set_tags(dict(tags))


class SilentRun(StageRun):
    """The handle of a process that does not track: every call does nothing (the ranks other
    than 0 of a DDP run, which train alongside rank 0 while it alone logs)."""

    def __init__(self) -> None:
        self.run_id = ""

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_figure(self, figure: Any, name: str) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def log_artifact_once(self, path: str | Path, folder: str, digest: str) -> str:
        return ""

    def log_model(self, module: Any, name: str, input_example: Any) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass


@contextlib.contextmanager
def stage_run(stage: str, config: Any, *, profile: str = "default", tags: Mapping[str, str] | None = None,
              parent: bool = False, run_id: str | None = None, enabled: bool = True,
              name: str | None = None) -> Iterator[StageRun]:
    """Open one MLflow run for `stage`, log `config` as params; mark it FAILED if the body raises.

    The run is named `name` (default: the stage), so a stage that trains several models
    (train_ldm_alt: one run per objective) names each run apart under one `stage` tag.

    `parent=False` opens a top-level run; nested runs (Optuna trials) pass `parent=True`.
    `run_id` re-opens that run instead (a resumed Optuna study): tags are set again, params
    are not (MLflow params are write-once). `enabled=False` opens nothing and yields a
    `SilentRun` (a DDP rank other than 0).
    """
    if not enabled:
        yield SilentRun()
        return
    configure()
    fail_orphaned_runs(stage, mlflow.get_experiment_by_name(EXPERIMENT).experiment_id)  # runs of killed processes
    flat = flatten_params(config)
    run_tags = {"stage": stage, "git_commit": _git_commit(), "params_hash": params_hash(flat), "profile": profile,
                **owner_tags()}
    # Set by pipelines/flows.py for the stage processes it launches: a person goes from this
    # run to its Prefect flow run, and a paper-profile run says so.
    for tag, variable in (("prefect_flow_run_id", "RADIODIFF_FLOW_RUN_ID"), ("profile", "RADIODIFF_PROFILE")):
        if os.environ.get(variable):
            run_tags[tag] = os.environ[variable]
    run_tags.update(tags or {})
    # MLflow's run context ends the run FAILED when the body raises, and on SIGTERM.
    with sigterm_raises(), mlflow.start_run(run_id=run_id, run_name=None if run_id else name or stage, tags=run_tags,
                                            nested=parent) as run:
        if run_id is None:
            mlflow.log_params(flat)
        yield StageRun(run)


def log_torch_model(module: Any, name: str, input_example: Any) -> None:
    """Log a one-tensor-in, one-tensor-out torch module as an MLflow model, with a signature
    inferred from `input_example` (a tensor) and its output, inside the active run."""
    import copy

    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    # A CPU copy: the logged model loads on any machine, whatever device trained it.
    module = copy.deepcopy(module).cpu().eval()
    with torch.no_grad():
        output = module(input_example.cpu())
    example = input_example.cpu().numpy()
    signature = infer_signature(example, output.cpu().numpy())
    # Explicit requirements: inferring them costs ~5 s per model and guesses wrong offline.
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy"]
    # Pickle format, because the samplers' Python loops do not export to pt2; radiodiff itself
    # never loads these files (it reads its own weights_only model files), so MLflow's
    # warning about unpickling is for the users who do, and said in the README.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    mlflow.pytorch.log_model(module, name=name, signature=signature, input_example=example,
                             pip_requirements=requirements, serialization_format="pickle")
