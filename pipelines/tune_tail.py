"""DVC stage `tune_tail`: fine-tune a copy of the denoiser on the Flux tail (dynamic conditional
fine-tuning), fed with the train scenes' static midpoints from the bank."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import DATASET_DIR, MODELS_DIR, WORK_DIR, Launch, ignore_log, stage_main, write_metrics
from prefect import flow

from pipelines.build_bank import BANK_DIR
from radiodiff import tracking
from radiodiff.config import ConditionConfig, FluxConfig


@flow(name="tune_tail", validate_parameters=False)
def tune_tail_flow(cfg: FluxConfig, condition: ConditionConfig, dataset_dir: str = str(DATASET_DIR),
                   models_dir: str = str(MODELS_DIR), bank_dir: str = str(BANK_DIR),
                   work_dir: str = str(WORK_DIR)) -> dict:
    """Train, save `models/flux_tail.pt`, log curves, validation Flux NMSE and the checkpoint."""
    from radiodiff.stages.ldm import load_ldm
    from radiodiff.stages.tail import save_tail, train_tail

    ldm_path, vae_path = Path(models_dir) / "ldm.pt", Path(models_dir) / "vae.pt"
    tail_path = Path(models_dir) / "flux_tail.pt"
    model, _, _ = load_ldm(ldm_path, vae_path)
    with tracking.stage_run("tune_tail", {"flux": cfg, "condition": condition}) as run:
        result = train_tail(model, cfg, condition, ldm_path=ldm_path, dataset_dir=Path(dataset_dir),
                            bank_dir=Path(bank_dir), work_dir=Path(work_dir), log=run.log)
        save_tail(tail_path, result.ema.ema_model, cfg, ldm_path)
        metrics = {"steps_per_s": result.steps_per_s, "train_seconds": result.wall_time_s,
                   **{k.replace("/", "_"): v for k, v in result.val_metrics.items()}}
        run.log(metrics)
        run.log_artifact(tail_path, folder="checkpoint")
        write_metrics("tune_tail", metrics)
    return metrics


def _tail_worker(params) -> None:
    """A torchrun rank other than 0: the same fine-tuning, without tracking or outputs."""
    from radiodiff.stages.ldm import load_ldm
    from radiodiff.stages.tail import train_tail

    ldm_path = MODELS_DIR / "ldm.pt"
    model, _, _ = load_ldm(ldm_path, MODELS_DIR / "vae.pt")
    train_tail(model, params.flux, params.condition, ldm_path=ldm_path, dataset_dir=DATASET_DIR, bank_dir=BANK_DIR,
               work_dir=WORK_DIR, log=ignore_log, progress=False)


LAUNCH = Launch(module="pipelines.tune_tail", loop=lambda params: params.flux.tail_tune.train, worker=_tail_worker)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: tune_tail_flow(params.flux, params.condition), LAUNCH)


if __name__ == "__main__":
    raise SystemExit(main())
