"""DVC stage `train_vae`: the KL autoencoder on the prepared gain maps."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import Launch, example_sample, publish_training, rank_flow, stage_main, write_curve
from prefect import flow

from radiodiff import tracking
from radiodiff.artifacts.layout import DATASET_DIR, MODELS, RUNS_DIR
from radiodiff.artifacts.vae import save_vae
from radiodiff.config import VAEConfig
from radiodiff.stages.vae import Reconstruct, train_vae
from radiodiff.training import distributed
from radiodiff.training.curves import Curve


@flow(name="train_vae", validate_parameters=False)
def train_vae_flow(cfg: VAEConfig, dataset_dir: str = str(DATASET_DIR), model_path: str = str(MODELS.vae),
                   work_dir: str = str(RUNS_DIR)) -> dict:
    """Train, save the EMA autoencoder, and log curves, metrics, figure and model to MLflow
    (every DDP rank trains; rank 0 alone tracks and writes)."""
    is_main = distributed.is_main()
    with tracking.stage_run("train_vae", cfg, enabled=is_main) as run:
        curve = Curve(run.log)
        result = train_vae(cfg, dataset_dir=Path(dataset_dir), work_dir=Path(work_dir), log=curve, progress=is_main)
        if is_main:
            write_curve(curve, "train_vae")
            example = example_sample(Path(dataset_dir))["gain"]
            save_vae(Path(model_path), result.model, cfg, scale_factor=result.scale_factor,
                     resolution=int(example.shape[-1]))
            publish_training(run, "train_vae", metrics=result.metrics, figure=result.figure,
                             figure_name="vae_reconstructions.png", model_path=Path(model_path), model_name="vae",
                             model_view=Reconstruct(result.model), example=example)
    return result.metrics


LAUNCH = Launch(module="pipelines.train_vae", section="vae.train", loop=lambda params: params.vae.train)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: rank_flow(train_vae_flow)(params.vae), LAUNCH)


if __name__ == "__main__":
    raise SystemExit(main())
