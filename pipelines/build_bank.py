"""DVC stage `build_bank`: static Flux midpoints of every scene of the chosen splits, in Parquet."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import prefect_map, rank_flow, stage_main, task_runner, write_metrics
from prefect import flow

from radiodiff import tracking
from radiodiff.artifacts.layout import BANK_DIR, BANK_WORK_DIR, DATASET_DIR, MODELS, ModelFiles
from radiodiff.config import FluxConfig

# The other objectives' models (train_ldm_alt) are evaluated but not tail-tuned: they need the
# midpoints of the test layouts only.
ALT_SPLITS = ("test",)


@dataclass(frozen=True)
class Chunk:
    """One Prefect task: the scenes `rows` (positions in the split order) of the bank build."""

    rows: tuple[int, ...]
    splits: tuple[str, ...]
    cfg: FluxConfig
    dataset_dir: str
    ldm_path: str
    vae_path: str
    bank_dir: str


def build_chunk(chunk: Chunk) -> int:
    """Load the model in this worker (on `flux.device`), fill the chunk's missing midpoints;
    rows written."""
    import torch

    from radiodiff.artifacts.denoiser import load_ldm
    from radiodiff.devices import resolve_device, resolve_precision
    from radiodiff.stages.bank import fill_bank, load_scenes

    torch.set_num_threads(1)  # one per Dask worker process: the workers share the cores
    device = resolve_device(chunk.cfg.device)
    precision = resolve_precision(chunk.cfg.precision, device)
    model, _, condition = load_ldm(Path(chunk.ldm_path), Path(chunk.vae_path), device, precision)
    scenes = load_scenes(Path(chunk.dataset_dir), chunk.splits).take(chunk.rows)
    return fill_bank(model, Path(chunk.ldm_path), Path(chunk.bank_dir), scenes, chunk.cfg, condition.channels)


def _counted(chunk: Chunk) -> tuple[Chunk, int]:
    """`build_chunk`, returning the chunk too: results arrive as chunks finish, in any order."""
    return chunk, build_chunk(chunk)


def _chunks(cfg: FluxConfig, splits: tuple[str, ...], dataset_dir: str, ldm_path: str, vae_path: str,
            bank_dir: str) -> list[Chunk]:
    """The scenes of `splits` in about 2 chunks per worker (so a slow chunk does not idle the
    rest), each a whole number of `cfg.batch_size` batches: the network then sees the same
    batches whatever the worker count, and the bank's latents are identical to the last bit."""
    from radiodiff.stages.bank import load_scenes

    count = len(load_scenes(Path(dataset_dir), splits).ids)
    per_chunk = -(-count // max(2 * cfg.workers, 1))
    per_chunk = -(-per_chunk // cfg.batch_size) * cfg.batch_size
    return [Chunk(tuple(range(start, min(start + per_chunk, count))), splits, cfg, dataset_dir, ldm_path, vae_path,
                  bank_dir) for start in range(0, count, per_chunk)]


def _bank_bytes(bank_dir: Path) -> int:
    return sum(p.stat().st_size for p in bank_dir.glob("*.parquet"))


@flow(name="build_bank", validate_parameters=False)
def build_bank_flow(cfg: FluxConfig, alternatives: tuple[str, ...] = (), dataset_dir: str = str(DATASET_DIR),
                    models_dir: str = str(MODELS.folder), bank_dir: str = str(BANK_DIR),
                    work_dir: str = str(BANK_WORK_DIR)) -> dict:
    """Fan chunks of scenes out over the task runner, for the served denoiser (`cfg.splits`) and
    each of the `alternatives` objectives' (`ALT_SPLITS`), into the resumable work bank
    `work_dir` (a killed build keeps what it wrote); then publish this run's keys as the sealed
    bank `bank_dir`, the DVC output; log bank size, build time and the bank."""
    from radiodiff.artifacts.denoiser import load_ldm
    from radiodiff.artifacts.keys import bank_key
    from radiodiff.bank.compact import export_bank
    from radiodiff.bank.record import content_digest
    from radiodiff.devices import device_name, resolve_device
    from radiodiff.progress import Progress
    from radiodiff.stages.bank import bank_summary

    device = resolve_device(cfg.device)  # checked here, once, before any worker starts
    files = ModelFiles(Path(models_dir))
    vae_path = files.vae
    jobs = [(files.ldm, tuple(cfg.splits))] + [(files.alternative(name), ALT_SPLITS) for name in alternatives]
    models = [load_ldm(path, vae_path)[0] for path, _ in jobs]  # fails fast, as one line, on missing models
    with tracking.stage_run("build_bank", {"flux": cfg}) as run:
        started = time.perf_counter()
        chunks = [chunk for path, splits in jobs
                  for chunk in _chunks(cfg, splits, dataset_dir, str(path), str(vae_path), work_dir)]
        written = 0
        with Progress(sum(len(c.rows) for c in chunks), "build_bank", unit="scene") as bar:
            for chunk, count in prefect_map(_counted, chunks):
                written += count
                bar.update(len(chunk.rows), entries_written=written)
        # The output holds this run's models' entries only, sealed: servers store misses beside it.
        keys = [bank_key(model, path, cfg, t_mid) for model, (path, _) in zip(models, jobs) for t_mid in cfg.t_mids]
        export_bank(Path(work_dir), Path(bank_dir), keys)
        entries = [int(bank_summary(model, path, Path(bank_dir), cfg)["entries"].sum())
                   for model, (path, _) in zip(models, jobs)]
        metrics = {"scenes": sum(len(c.rows) for c in chunks if c.ldm_path == str(jobs[0][0])),
                   "entries_written": written, "entries": entries[0],
                   **{f"entries_{name}": count for name, count in zip(alternatives, entries[1:])},
                   "bank_mb": _bank_bytes(Path(bank_dir)) / 1e6, "build_seconds": time.perf_counter() - started,
                   "device": device_name(device)}
        run.log(metrics)
        run.log_artifact_once(Path(bank_dir), folder="bank", digest=content_digest(Path(bank_dir)))
        write_metrics("build_bank", metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    def body(params) -> None:
        runner = task_runner(params.flux.workers, params.dask.address)
        alternatives = tuple(p.value for p in params.ldm_alt.predictions)
        rank_flow(build_bank_flow.with_options(task_runner=runner))(params.flux, alternatives)

    return stage_main(argv, __doc__, body)


if __name__ == "__main__":
    raise SystemExit(main())
