"""DVC stage `train_vae`: the KL autoencoder on the prepared gain maps."""

from __future__ import annotations

import argparse
from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import (
    DATASET_DIR, MODELS_DIR, WORK_DIR, example_sample, run_stage, save_figure, use_all_cores, write_metrics,
)
from prefect import flow

from radiodiff import tracking
from radiodiff.config import VAEConfig, load_params
from radiodiff.export import Reconstruct
from radiodiff.stages.vae import save_vae, train_vae


@flow(name="train_vae", validate_parameters=False)
def train_vae_flow(cfg: VAEConfig, dataset_dir: str = str(DATASET_DIR), model_path: str = str(MODELS_DIR / "vae.pt"),
                   work_dir: str = str(WORK_DIR)) -> dict:
    """Train, save the EMA autoencoder, and log curves, metrics, figure and model to MLflow."""
    with tracking.stage_run("train_vae", cfg) as run:
        result = train_vae(cfg, dataset_dir=Path(dataset_dir), work_dir=Path(work_dir), log=run.log)
        save_vae(Path(model_path), result, cfg)
        run.log(result.metrics)
        run.log_figure(result.figure, "vae_reconstructions.png")
        save_figure(result.figure, "vae_reconstructions.png")
        run.log_artifact(Path(model_path), folder="checkpoint")
        run.log_model(Reconstruct(result.model), "vae", example_sample(Path(dataset_dir))["gain"])
        write_metrics("train_vae", result.metrics)
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)

    def body() -> None:
        cfg = load_params(args.params).vae
        use_all_cores()
        train_vae_flow(cfg)

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
