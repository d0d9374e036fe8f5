"""Optuna tuning of a pipeline stage, with the search space in params.yaml's `tune:` section.

- `radiodiff.tune_config` (beside the params config, a leaf): the `tune:` section as dataclasses.
- `overrides`: set dotted params keys on a frozen config (`apply_overrides`).
- `space`: the space checked against its stage; a trial's config; sampling one parameter.
- `objective`: one trial trains the stage for its budget and reports validation to the pruner.
- `study`: `run_tuning`, the resumable sqlite study; `best`: the best params for `dvc exp run`.
- `report`: trial rows, the printed table and the figures; `tracker`: what a tracker is told.

Nothing here imports MLflow or Prefect; `radiodiff.tracking.study` is the MLflow tracker.
"""
