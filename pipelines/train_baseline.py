"""DVC stage `train_baseline`: the RadioUNet-style supervised peer."""

from __future__ import annotations

import argparse
from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import (
    DATASET_DIR, MODELS_DIR, WORK_DIR, example_sample, run_stage, save_figure, use_all_cores, write_metrics,
)
from prefect import flow

from radiodiff import tracking
from radiodiff.config import BaselineConfig, ConditionConfig, load_params
from radiodiff.export import PredictBaseline
from radiodiff.stages.baseline import save_baseline, train_baseline


@flow(name="train_baseline", validate_parameters=False)
def train_baseline_flow(cfg: BaselineConfig, condition: ConditionConfig, dataset_dir: str = str(DATASET_DIR),
                        model_path: str = str(MODELS_DIR / "baseline.pt"), work_dir: str = str(WORK_DIR)) -> dict:
    """Train, save the EMA baseline, and log curves, metrics, figure and model to MLflow."""
    with tracking.stage_run("train_baseline", {"baseline": cfg, "condition": condition}) as run:
        result = train_baseline(cfg, condition, dataset_dir=Path(dataset_dir), work_dir=Path(work_dir), log=run.log)
        save_baseline(Path(model_path), result, cfg, condition)
        run.log(result.metrics)
        run.log_figure(result.figure, "baseline_predictions.png")
        save_figure(result.figure, "baseline_predictions.png")
        run.log_artifact(Path(model_path), folder="checkpoint")
        example = example_sample(Path(dataset_dir), condition.encodings)["cond"]
        run.log_model(PredictBaseline(result.model), "baseline", example)
        write_metrics("train_baseline", result.metrics)
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_params(args.params)
        use_all_cores()
        train_baseline_flow(params.baseline, params.condition)

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
