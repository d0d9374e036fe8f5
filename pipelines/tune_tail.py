"""DVC stage `tune_tail`: fine-tune a copy of the denoiser on the Flux tail (dynamic conditional
fine-tuning), fed with the train scenes' static midpoints from the bank."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import Launch, rank_flow, stage_main, write_curve, write_metrics
from prefect import flow

from radiodiff import tracking
from radiodiff.artifacts.layout import BANK_DIR, DATASET_DIR, MODELS, ModelFiles, RUNS_DIR
from radiodiff.config import ConditionConfig, FluxConfig
from radiodiff.training import distributed
from radiodiff.training.curves import Curve


@flow(name="tune_tail", validate_parameters=False)
def tune_tail_flow(cfg: FluxConfig, condition: ConditionConfig, dataset_dir: str = str(DATASET_DIR),
                   models_dir: str = str(MODELS.folder), bank_dir: str = str(BANK_DIR),
                   work_dir: str = str(RUNS_DIR)) -> dict:
    """Train, save `flux_tail.pt`, log curves, validation Flux NMSE and the checkpoint (every
    DDP rank trains; rank 0 alone tracks and writes)."""
    from radiodiff.artifacts.denoiser import load_ldm, save_tail
    from radiodiff.devices import device_name, resolve_device
    from radiodiff.stages.tail import train_tail

    files = ModelFiles(Path(models_dir))
    is_main = distributed.is_main()
    device = resolve_device(cfg.tail_tune.train.device)
    model, _, _ = load_ldm(files.ldm, files.vae, device)
    with tracking.stage_run("tune_tail", {"flux": cfg, "condition": condition}, enabled=is_main) as run:
        curve = Curve(run.log)
        result = train_tail(model, cfg, condition, ldm_path=files.ldm, dataset_dir=Path(dataset_dir),
                            bank_dir=Path(bank_dir), work_dir=Path(work_dir), log=curve, progress=is_main)
        metrics = {"steps_per_s": result.steps_per_s, "train_seconds": result.train_seconds, "device": device_name(device),
                   **{k.replace("/", "_"): v for k, v in result.val_metrics.items()}}
        if is_main:
            save_tail(files.flux_tail, result.ema.ema_model, cfg, files.ldm)
            write_curve(curve, "tune_tail")
            run.log(metrics)
            run.log_artifact(files.flux_tail, folder="checkpoint")
            write_metrics("tune_tail", metrics)
    return metrics


LAUNCH = Launch(module="pipelines.tune_tail", section="flux.tail_tune.train", loop=lambda params: params.flux.tail_tune.train)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: rank_flow(tune_tail_flow)(params.flux, params.condition), LAUNCH)


if __name__ == "__main__":
    raise SystemExit(main())
