"""`radiodiff tune`: search the `tune:` space of the params file with Optuna.

    radiodiff tune [--params FILE] [--n-trials N] [--storage STORAGE] [--dataset DIR] [--vae FILE]
                   [--work-dir DIR] [--threads N] [--no-mlflow]

Each trial trains the LDM for `tune.trial_steps` on the prepared dataset and trained VAE
(`dvc repro train_vae` first) and is scored by its validation metric; a median pruner stops
weak trials early. The study lives in `tune.storage` (or --storage): a sqlite file, a database
URL several workers share, or journal:FILE on a shared filesystem; running the command again
adds --n-trials more. A trial whose process was killed is marked FAIL by a later trial and run
once more with its params (database storages). Every trial is a nested MLflow run under the
study's run. At the end it prints every trial, and writes the best params beside the study
file: best_params.yaml, and best_params.args for `dvc exp run $(cat tune/best_params.args)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radiodiff.artifacts.layout import DATASET_DIR, MODELS, TUNE_DIR
from radiodiff.cli.arguments import positive_int


def add_parser(subparsers) -> None:
    """Register the `tune` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser("tune", help="tune LDM params with Optuna (resumable study, MLflow runs)",
                                   description="\n\n".join(__doc__.split("\n\n")[2:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                        help="params file with a tune: section (default: params.yaml)")
    parser.add_argument("--n-trials", type=positive_int, metavar="N", help="trials to add (default: tune.n_trials)")
    parser.add_argument("--study-db", "--storage", dest="study_db", metavar="STORAGE",
                        help="sqlite file, database URL or journal:FILE (default: tune.storage)")
    parser.add_argument("--dataset", type=Path, default=DATASET_DIR, metavar="DIR",
                        help=f"prepared dataset (default: {DATASET_DIR})")
    parser.add_argument("--vae", type=Path, default=MODELS.vae, metavar="FILE",
                        help=f"trained VAE (default: {MODELS.vae})")
    parser.add_argument("--work-dir", type=Path, default=TUNE_DIR, metavar="DIR",
                        help=f"trial checkpoints, removed after each trial (default: {TUNE_DIR})")
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch threads (default: every core)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the study to MLflow")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `tune` for parsed arguments; a bad params file or space raises UserError (exit 2)."""
    import os

    import optuna
    import torch

    from radiodiff.config import load_params
    from radiodiff.tuning.objective import TrialInputs
    from radiodiff.tuning.report import format_table
    from radiodiff.tuning.study import run_tuning
    from radiodiff.tuning.tracker import NullTracker

    params = load_params(args.params)
    torch.set_num_threads(args.threads or max(os.cpu_count() or 1, 1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is printed below
    inputs = TrialInputs(dataset_dir=args.dataset, vae_path=args.vae, work_dir=args.work_dir)
    result = run_tuning(params, inputs=inputs, n_trials=args.n_trials, storage=args.study_db,
                        tracker=NullTracker() if args.no_mlflow else _mlflow_tracker(args.params),
                        on_trial=lambda row: print(f"trial {row.number}: {row.state}, {params.tune.metric} "
                                                   f"{'-' if row.value is None else f'{row.value:.4g}'}", flush=True))
    print(format_table(result.rows, result.metric, result.best))
    if result.best is None:
        print(f"no complete trial yet in study {result.study!r} ({result.storage})")
    else:
        print(f"best: trial {result.best.number}, {result.metric} {result.best.value:.4g}; "
              f"apply with: dvc exp run $(cat {result.best_files[1]})")
    return 0


def _mlflow_tracker(params_path: Path):
    from radiodiff.tracking.study import MlflowStudyTracker

    return MlflowStudyTracker(profile="default" if params_path.name == "params.yaml" else params_path.stem)
