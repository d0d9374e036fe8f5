"""Prefect flow `tune`: the Optuna study of `radiodiff tune` (params.yaml's `tune:` section).

The `tune` deployment (pipelines/flows.py, prefect.yaml) runs this flow on a GPU worker. The
command line below runs it on a temporary local Prefect server that Prefect starts by itself;
`radiodiff tune` runs the same study without Prefect:

    python -m pipelines.tune [--params FILE] [--n-trials N] [--study-db FILE]
"""

from __future__ import annotations

import os
from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import run_stage, use_all_cores
from prefect import flow
from prefect.runtime import flow_run

from radiodiff.artifacts.layout import DATASET_DIR, MODELS, TUNE_DIR
from radiodiff.config import load_params
from radiodiff.tracking.study import MlflowStudyTracker
from radiodiff.tuning.objective import TrialInputs
from radiodiff.tuning.study import run_tuning, state_counts


@flow(name="tune", validate_parameters=False)
def tune_flow(params_path: str = "params.yaml", n_trials: int | None = None, study_db: str | None = None,
              dataset_dir: str = str(DATASET_DIR), vae_path: str = str(MODELS.vae),
              work_dir: str = str(TUNE_DIR)) -> dict:
    """Add `n_trials` (default `tune.n_trials`) trials to the study and write the best params;
    returns a summary (study, trials by state, best trial, value, params and files)."""
    params = load_params(params_path)
    # A flow run started by pipelines/flows.py already names its own run in the environment.
    tags = {} if os.environ.get("RADIODIFF_FLOW_RUN_ID") or not flow_run.id else {"prefect_flow_run_id": str(flow_run.id)}
    profile = "default" if Path(params_path).name == "params.yaml" else Path(params_path).stem
    result = run_tuning(params, n_trials=n_trials, storage=study_db,
                        inputs=TrialInputs(dataset_dir=Path(dataset_dir), vae_path=Path(vae_path),
                                           work_dir=Path(work_dir)),
                        tracker=MlflowStudyTracker(profile=profile, tags=tags))
    best = result.best
    states = {state: count for state, count in state_counts(result.rows).items() if count}
    return {"study": result.study, "storage": str(result.storage), "trials": states,
            "best_trial": None if best is None else best.number, "best_value": None if best is None else best.value,
            "best_params": None if best is None else best.params, "best_files": [str(p) for p in result.best_files]}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--n-trials", type=int, help="trials to add (default: tune.n_trials)")
    parser.add_argument("--study-db", "--storage", dest="study_db",
                        help="sqlite file, database URL or journal:FILE (default: tune.storage)")
    args = parser.parse_args(argv)
    use_all_cores()
    return run_stage(lambda: print(tune_flow(args.params, args.n_trials, args.study_db)))


if __name__ == "__main__":
    raise SystemExit(main())
