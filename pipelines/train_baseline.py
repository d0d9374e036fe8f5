"""DVC stage `train_baseline`: the RadioUNet-style supervised peer."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import Launch, example_sample, publish_training, rank_flow, stage_main, write_curve
from prefect import flow

from radiodiff import tracking
from radiodiff.artifacts.baseline import save_baseline
from radiodiff.artifacts.layout import DATASET_DIR, METRICS_DIR, MODELS, RUNS_DIR
from radiodiff.config import BaselineConfig, ConditionConfig
from radiodiff.stages.baseline import PredictBaseline, train_baseline
from radiodiff.stages.parity import generative_train_seconds
from radiodiff.training import distributed
from radiodiff.training.curves import Curve


@flow(name="train_baseline", validate_parameters=False)
def train_baseline_flow(cfg: BaselineConfig, condition: ConditionConfig, dataset_dir: str = str(DATASET_DIR),
                        model_path: str = str(MODELS.baseline), work_dir: str = str(RUNS_DIR),
                        metrics_dir: str = str(METRICS_DIR)) -> dict:
    """Train, save the EMA baseline, and log curves, metrics, figure and model to MLflow
    (every DDP rank trains; rank 0 alone tracks and writes). With `cfg.compute_parity` the run
    lasts at least the training time the generative stages wrote in `metrics_dir`."""
    is_main = distributed.is_main()
    parity_seconds = generative_train_seconds(Path(metrics_dir)) if cfg.compute_parity else None
    with tracking.stage_run("train_baseline", {"baseline": cfg, "condition": condition}, enabled=is_main) as run:
        curve = Curve(run.log)
        result = train_baseline(cfg, condition, dataset_dir=Path(dataset_dir), work_dir=Path(work_dir), log=curve,
                                progress=is_main, parity_seconds=parity_seconds)
        if is_main:
            write_curve(curve, "train_baseline")
            save_baseline(Path(model_path), result.model, cfg, condition)
            publish_training(run, "train_baseline", metrics=result.metrics, figure=result.figure,
                             figure_name="baseline_predictions.png", model_path=Path(model_path),
                             model_name="baseline", model_view=PredictBaseline(result.model),
                             example=example_sample(Path(dataset_dir), condition.encodings)["cond"])
    return result.metrics


LAUNCH = Launch(module="pipelines.train_baseline", section="baseline.train", loop=lambda params: params.baseline.train)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: rank_flow(train_baseline_flow)(params.baseline, params.condition),
                      LAUNCH)


if __name__ == "__main__":
    raise SystemExit(main())
