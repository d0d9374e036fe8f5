"""DVC stage `build_bank`: static Flux midpoints of every scene of the chosen splits, in Parquet."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import DATASET_DIR, MODELS_DIR, prefect_map, stage_main, task_runner, write_metrics
from prefect import flow

from radiodiff import tracking
from radiodiff.config import FluxConfig

BANK_DIR = Path("bank")


@dataclass(frozen=True)
class Chunk:
    """One Prefect task: the scenes `rows` (positions in the split order) of the bank build."""

    rows: tuple[int, ...]
    cfg: FluxConfig
    dataset_dir: str
    ldm_path: str
    vae_path: str
    bank_dir: str


def build_chunk(chunk: Chunk) -> int:
    """Load the model in this worker, fill the chunk's missing midpoints; rows written."""
    import torch

    from radiodiff.stages.bank import fill_bank, load_scenes
    from radiodiff.stages.ldm import load_ldm

    torch.set_num_threads(1)  # one per Dask worker process: the workers share the cores
    model, _, condition = load_ldm(Path(chunk.ldm_path), Path(chunk.vae_path))
    scenes = load_scenes(Path(chunk.dataset_dir), chunk.cfg.splits).take(chunk.rows)
    return fill_bank(model, Path(chunk.ldm_path), Path(chunk.bank_dir), scenes, chunk.cfg, condition.channels)


def _bank_bytes(bank_dir: Path) -> int:
    return sum(p.stat().st_size for p in bank_dir.glob("*.parquet"))


@flow(name="build_bank", validate_parameters=False)
def build_bank_flow(cfg: FluxConfig, dataset_dir: str = str(DATASET_DIR), models_dir: str = str(MODELS_DIR),
                    bank_dir: str = str(BANK_DIR)) -> dict:
    """Fan chunks of scenes out over the task runner; log bank size, build time and the bank."""
    from radiodiff.stages.bank import bank_summary, load_scenes
    from radiodiff.stages.ldm import load_ldm

    ldm_path, vae_path = Path(models_dir) / "ldm.pt", Path(models_dir) / "vae.pt"
    model, _, _ = load_ldm(ldm_path, vae_path)  # fails fast, as one line, on missing models
    with tracking.stage_run("build_bank", {"flux": cfg}) as run:
        started = time.perf_counter()
        count = len(load_scenes(Path(dataset_dir), cfg.splits).ids)
        per_chunk = -(-count // max(2 * cfg.workers, 1))
        chunks = [Chunk(tuple(range(start, min(start + per_chunk, count))), cfg, dataset_dir, str(ldm_path),
                        str(vae_path), bank_dir) for start in range(0, count, per_chunk)]
        written = sum(prefect_map(build_chunk, chunks))
        summary = bank_summary(model, ldm_path, Path(bank_dir), cfg)
        metrics = {"scenes": count, "entries_written": written, "entries": int(summary["entries"].sum()),
                   "bank_mb": _bank_bytes(Path(bank_dir)) / 1e6, "build_seconds": time.perf_counter() - started}
        run.log(metrics)
        run.log_artifact(Path(bank_dir), folder="bank")
        write_metrics("build_bank", metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    def body(params) -> None:
        build_bank_flow.with_options(task_runner=task_runner(params.flux.workers))(params.flux)

    return stage_main(argv, __doc__, body)


if __name__ == "__main__":
    raise SystemExit(main())
