"""DVC stage `train_ldm`: RadioDiff's conditional latent denoiser."""

from __future__ import annotations

import argparse
from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import (
    DATASET_DIR, MODELS_DIR, WORK_DIR, example_sample, run_stage, save_figure, use_all_cores, write_metrics,
)
from prefect import flow

from radiodiff import tracking
from radiodiff.config import ConditionConfig, LDMConfig, load_params
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
        run.log(result.metrics)
        run.log_figure(result.figure, "ldm_samples.png")
        save_figure(result.figure, "ldm_samples.png")
        run.log_artifact(Path(model_path), folder="checkpoint")
        example = example_sample(Path(dataset_dir), condition.encodings)["cond"]
        run.log_model(SampleRadioMap(result.model, cfg.sample_steps), "ldm_sampler", example)
        write_metrics("train_ldm", result.metrics)
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_params(args.params)
        use_all_cores()
        train_ldm_flow(params.ldm, params.condition)

    return run_stage(body)


if __name__ == "__main__":
    raise SystemExit(main())
