"""DVC stage `train_vae`: the KL autoencoder on the prepared gain maps."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import (
    DATASET_DIR, MODELS_DIR, WORK_DIR, Launch, example_sample, ignore_log, publish_training, stage_main,
)
from prefect import flow

from radiodiff import tracking
from radiodiff.config import VAEConfig
from radiodiff.export import Reconstruct
from radiodiff.stages.vae import save_vae, train_vae


@flow(name="train_vae", validate_parameters=False)
def train_vae_flow(cfg: VAEConfig, dataset_dir: str = str(DATASET_DIR), model_path: str = str(MODELS_DIR / "vae.pt"),
                   work_dir: str = str(WORK_DIR)) -> dict:
    """Train, save the EMA autoencoder, and log curves, metrics, figure and model to MLflow."""
    with tracking.stage_run("train_vae", cfg) as run:
        result = train_vae(cfg, dataset_dir=Path(dataset_dir), work_dir=Path(work_dir), log=run.log)
        save_vae(Path(model_path), result, cfg)
        publish_training(run, "train_vae", metrics=result.metrics, figure=result.figure,
                         figure_name="vae_reconstructions.png", model_path=Path(model_path), model_name="vae",
                         model_view=Reconstruct(result.model), example=example_sample(Path(dataset_dir))["gain"])
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: train_vae_flow(params.vae), LAUNCH)


LAUNCH = Launch(
    module="pipelines.train_vae", loop=lambda params: params.vae.train,
    worker=lambda params: train_vae(params.vae, dataset_dir=DATASET_DIR, work_dir=WORK_DIR, log=ignore_log,
                                    progress=False),
)


if __name__ == "__main__":
    raise SystemExit(main())
