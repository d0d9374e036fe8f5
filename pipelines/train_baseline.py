"""DVC stage `train_baseline`: the RadioUNet-style supervised peer."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import (
    DATASET_DIR, MODELS_DIR, WORK_DIR, Launch, example_sample, ignore_log, publish_training, stage_main,
)
from prefect import flow

from radiodiff import tracking
from radiodiff.config import BaselineConfig, ConditionConfig
from radiodiff.export import PredictBaseline
from radiodiff.stages.baseline import save_baseline, train_baseline


@flow(name="train_baseline", validate_parameters=False)
def train_baseline_flow(cfg: BaselineConfig, condition: ConditionConfig, dataset_dir: str = str(DATASET_DIR),
                        model_path: str = str(MODELS_DIR / "baseline.pt"), work_dir: str = str(WORK_DIR)) -> dict:
    """Train, save the EMA baseline, and log curves, metrics, figure and model to MLflow."""
    with tracking.stage_run("train_baseline", {"baseline": cfg, "condition": condition}) as run:
        result = train_baseline(cfg, condition, dataset_dir=Path(dataset_dir), work_dir=Path(work_dir), log=run.log)
        save_baseline(Path(model_path), result, cfg, condition)
        publish_training(run, "train_baseline", metrics=result.metrics, figure=result.figure,
                         figure_name="baseline_predictions.png", model_path=Path(model_path), model_name="baseline",
                         model_view=PredictBaseline(result.model),
                         example=example_sample(Path(dataset_dir), condition.encodings)["cond"])
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: train_baseline_flow(params.baseline, params.condition), LAUNCH)


LAUNCH = Launch(
    module="pipelines.train_baseline", loop=lambda params: params.baseline.train,
    worker=lambda params: train_baseline(params.baseline, params.condition, dataset_dir=DATASET_DIR,
                                         work_dir=WORK_DIR, log=ignore_log, progress=False),
)


if __name__ == "__main__":
    raise SystemExit(main())
