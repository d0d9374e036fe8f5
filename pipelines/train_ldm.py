"""DVC stage `train_ldm`: RadioDiff's conditional latent denoiser."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import Launch, example_sample, publish_training, rank_flow, stage_main, write_curve
from prefect import flow

from radiodiff import tracking
from radiodiff.artifacts.denoiser import save_ldm
from radiodiff.artifacts.layout import DATASET_DIR, MODELS, RUNS_DIR
from radiodiff.config import ConditionConfig, LDMConfig
from radiodiff.stages.ldm import SampleRadioMap, train_ldm
from radiodiff.training import distributed
from radiodiff.training.curves import Curve


@flow(name="train_ldm", validate_parameters=False)
def train_ldm_flow(cfg: LDMConfig, condition: ConditionConfig, dataset_dir: str = str(DATASET_DIR),
                   vae_path: str = str(MODELS.vae), model_path: str = str(MODELS.ldm),
                   work_dir: str = str(RUNS_DIR), stage: str = "train_ldm", objective: str | None = None) -> dict:
    """Train, save the EMA denoiser, and log curves, metrics, samples and model to MLflow.

    `stage` names the run, the metrics file and the figure (train_ldm: `metrics/train_ldm.json`,
    `plots/ldm_samples.png`). An alternative `objective` (kc, flow) of train_ldm_alt is the run
    `{stage}_{objective}` (tag `objective`), with its figure in `plots/ldm_alt/{objective}_samples.png`;
    it leaves the metrics file to its stage, which writes all objectives' in one. Every DDP
    rank trains; rank 0 alone tracks and writes."""
    is_main = distributed.is_main()
    named = {} if objective is None else {"name": f"{stage}_{objective}", "tags": {"objective": objective}}
    with tracking.stage_run(stage, {"ldm": cfg, "condition": condition}, enabled=is_main, **named) as run:
        curve = Curve(run.log)
        result = train_ldm(cfg, condition, dataset_dir=Path(dataset_dir), vae_path=Path(vae_path),
                           work_dir=Path(work_dir), log=curve, progress=is_main)
        if is_main:
            write_curve(curve, stage, objective or "")
            save_ldm(Path(model_path), result.model.unet, cfg, condition, Path(vae_path))
            short = stage.removeprefix("train_")
            publish_training(run, None if objective else stage, metrics=result.metrics, figure=result.figure,
                             figure_name=f"{short}/{objective}_samples.png" if objective else f"{short}_samples.png",
                             model_path=Path(model_path), model_name="ldm_sampler",
                             model_view=SampleRadioMap(result.model, cfg.sample_steps),
                             example=example_sample(Path(dataset_dir), condition.encodings)["cond"])
    return result.metrics


LAUNCH = Launch(module="pipelines.train_ldm", section="ldm.train", loop=lambda params: params.ldm.train)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: rank_flow(train_ldm_flow)(params.ldm, params.condition), LAUNCH)


if __name__ == "__main__":
    raise SystemExit(main())
