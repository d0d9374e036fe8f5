"""DVC stage `train_ldm`: RadioDiff's conditional latent denoiser."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import (
    DATASET_DIR, MODELS_DIR, WORK_DIR, Launch, example_sample, ignore_log, publish_training, stage_main,
)
from prefect import flow

from radiodiff import tracking
from radiodiff.config import ConditionConfig, LDMConfig
from radiodiff.export import SampleRadioMap
from radiodiff.stages.ldm import save_ldm, train_ldm


@flow(name="train_ldm", validate_parameters=False)
def train_ldm_flow(cfg: LDMConfig, condition: ConditionConfig, dataset_dir: str = str(DATASET_DIR),
                   vae_path: str = str(MODELS_DIR / "vae.pt"), model_path: str = str(MODELS_DIR / "ldm.pt"),
                   work_dir: str = str(WORK_DIR), stage: str = "train_ldm") -> dict:
    """Train, save the EMA denoiser, and log curves, metrics, samples and model to MLflow
    (`stage` names the run, the metrics file and the figure: train_ldm or train_ldm_alt)."""
    with tracking.stage_run(stage, {"ldm": cfg, "condition": condition}) as run:
        result = train_ldm(cfg, condition, dataset_dir=Path(dataset_dir), vae_path=Path(vae_path),
                           work_dir=Path(work_dir), log=run.log)
        save_ldm(Path(model_path), result, cfg, condition, Path(vae_path))
        publish_training(run, stage, metrics=result.metrics, figure=result.figure,
                         figure_name=f"{stage.removeprefix('train_')}_samples.png", model_path=Path(model_path),
                         model_name="ldm_sampler",
                         model_view=SampleRadioMap(result.model, cfg.sample_steps),
                         example=example_sample(Path(dataset_dir), condition.encodings)["cond"])
    return result.metrics


def ldm_launch(module: str, config: Callable[[Any], LDMConfig]) -> Launch:
    """How a denoiser stage whose LDMConfig is `config(params)` spreads over its devices."""
    return Launch(module=module, loop=lambda params: config(params).train,
                  worker=lambda params: train_ldm(config(params), params.condition, dataset_dir=DATASET_DIR,
                                                  vae_path=MODELS_DIR / "vae.pt", work_dir=WORK_DIR,
                                                  log=ignore_log, progress=False))


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: train_ldm_flow(params.ldm, params.condition),
                      ldm_launch("pipelines.train_ldm", lambda params: params.ldm))


if __name__ == "__main__":
    raise SystemExit(main())
