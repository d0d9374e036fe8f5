"""DVC stage `tune_few_step`: the control of tune_tail. Each objective's denoiser (the served
`ldm` and every `ldm_alt` one) gets the Flux tail's extra fine-tuning (`flux.tail_tune`) on
its own sampler at the served tail's calls (`flux.tail_steps`: one) instead, so evaluate sets
DDIM-1, decoupled-1 and flow-1 with the same extra training beside Flux. Models in `models/few_step/{objective}.pt`, metrics of all in
one file keyed by objective."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import Launch, rank_flow, stage_main, write_curve, write_metrics
from prefect import flow

from radiodiff import tracking
from radiodiff.artifacts.layout import DATASET_DIR, MODELS, RUNS_DIR
from radiodiff.config import ConditionConfig, FluxConfig
from radiodiff.training import distributed
from radiodiff.training.curves import Curve

STAGE = "tune_few_step"


@flow(name=STAGE, validate_parameters=False)
def tune_few_step_flow(cfg: FluxConfig, condition: ConditionConfig, objective: str, ldm_path: str,
                       model_path: str, dataset_dir: str = str(DATASET_DIR), vae_path: str = str(MODELS.vae),
                       work_dir: str = str(RUNS_DIR)) -> dict:
    """Fine-tune the denoiser of `ldm_path` (objective `objective`) on its one-step sampler,
    save it to `model_path`, log curves, validation NMSE and the file to the MLflow run
    `tune_few_step_{objective}` (every DDP rank trains; rank 0 alone tracks and writes)."""
    from radiodiff.artifacts.denoiser import load_ldm, save_few_step
    from radiodiff.devices import device_name, resolve_device
    from radiodiff.stages.few_step import train_few_step

    is_main = distributed.is_main()
    device = resolve_device(cfg.tail_tune.train.device)
    model, _, _ = load_ldm(Path(ldm_path), Path(vae_path), device)
    with tracking.stage_run(STAGE, {"flux": cfg, "condition": condition}, enabled=is_main,
                            name=f"{STAGE}_{objective}", tags={"objective": objective}) as run:
        curve = Curve(run.log)
        result = train_few_step(model, cfg, condition, ldm_path=Path(ldm_path), dataset_dir=Path(dataset_dir),
                                work_dir=Path(work_dir), log=curve, progress=is_main)
        metrics = {"steps_per_s": result.steps_per_s, "train_seconds": result.train_seconds,
                   "device": device_name(device), **{k.replace("/", "_"): v for k, v in result.val_metrics.items()}}
        if is_main:
            save_few_step(Path(model_path), result.ema.ema_model, cfg, Path(ldm_path))
            write_curve(curve, STAGE, objective)
            run.log(metrics)
            run.log_artifact(Path(model_path), folder="checkpoint")
    return metrics


def objectives(params) -> dict[str, Path]:
    """Each objective's denoiser file: the served `ldm` first, then `ldm_alt`'s in params order."""
    served = {params.ldm.diffusion.prediction.value: MODELS.ldm}
    return served | {p.value: MODELS.alternative(p.value) for p in params.ldm_alt.derive(params.ldm)}


def tune_all(params) -> dict:
    """Tune each objective's copy; their metrics by objective name."""
    metrics = {}
    for name, ldm_path in objectives(params).items():
        metrics[name] = rank_flow(tune_few_step_flow)(params.flux, params.condition, name, str(ldm_path),
                                                      str(MODELS.few_step(name)))
    if distributed.is_main():
        write_metrics(STAGE, metrics)
    return metrics


# Every objective tunes with the tail's loop settings (devices included).
LAUNCH = Launch(module="pipelines.tune_few_step", section="flux.tail_tune.train",
                loop=lambda params: params.flux.tail_tune.train)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, tune_all, LAUNCH)


if __name__ == "__main__":
    raise SystemExit(main())
