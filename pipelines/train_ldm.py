"""DVC stage `train_ldm`: RadioDiff's conditional latent denoiser."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import (
    DATASET_DIR, MODELS_DIR, WORK_DIR, example_sample, publish_training, stage_main,
)
from prefect import flow

from radiodiff import tracking
from radiodiff.config import ConditionConfig, LDMConfig
from radiodiff.export import SampleRadioMap
from radiodiff.stages.ldm import save_ldm, train_ldm


@flow(name="train_ldm", validate_parameters=False)
def train_ldm_flow(cfg: LDMConfig, condition: ConditionConfig, dataset_dir: str = str(DATASET_DIR),
                   vae_path: str = str(MODELS_DIR / "vae.pt"), model_path: str = str(MODELS_DIR / "ldm.pt"),
                   work_dir: str = str(WORK_DIR)) -> dict:
    """Train, save the EMA denoiser, and log curves, metrics, samples and model to MLflow."""
    with tracking.stage_run("train_ldm", {"ldm": cfg, "condition": condition}) as run:
        result = train_ldm(cfg, condition, dataset_dir=Path(dataset_dir), vae_path=Path(vae_path),
                           work_dir=Path(work_dir), log=run.log)
        save_ldm(Path(model_path), result, cfg, condition, Path(vae_path))
        publish_training(run, "train_ldm", metrics=result.metrics, figure=result.figure,
                         figure_name="ldm_samples.png", model_path=Path(model_path), model_name="ldm_sampler",
                         model_view=SampleRadioMap(result.model, cfg.sample_steps),
                         example=example_sample(Path(dataset_dir), condition.encodings)["cond"])
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: train_ldm_flow(params.ldm, params.condition))


if __name__ == "__main__":
    raise SystemExit(main())
