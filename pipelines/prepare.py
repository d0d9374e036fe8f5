"""DVC stage `prepare`: RadioMapSeer scenes + targets -> dataset shards and a Parquet index."""

from __future__ import annotations

from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import prefect_map, rank_flow, save_figure, stage_main, task_runner, write_metrics
from prefect import flow

from radiodiff import tracking
from radiodiff.artifacts.layout import DATASET_DIR, PREPARE_CACHE_DIR
from radiodiff.config import PrepareConfig
from radiodiff.data.figures import sample_figure
from radiodiff.data.prepare import check_source, run_prepare


@flow(name="prepare", validate_parameters=False)
def prepare_flow(cfg: PrepareConfig, dataset_dir: str = str(DATASET_DIR), cache_dir: str = str(PREPARE_CACHE_DIR)) -> dict:
    """Simulate (or import) every chosen map as a shard, fanned out per map; assemble; log."""
    with tracking.stage_run("prepare", cfg) as run:
        result = run_prepare(cfg, out_dir=Path(dataset_dir), cache_dir=Path(cache_dir), map_fn=prefect_map)
        run.log(result.metrics)
        figure = sample_figure(Path(dataset_dir), split="train", count=4, seed=cfg.seed)
        run.log_figure(figure, "prepare_samples.png")
        save_figure(figure, "prepare_samples.png")
        run.log_artifact(Path(dataset_dir) / "index.parquet", folder="dataset")
        write_metrics("prepare", result.metrics)
    return result.metrics


def _run(params) -> None:
    cfg = params.prepare
    check_source(cfg)  # user mistakes surface here, as one line, before Prefect starts
    rank_flow(prepare_flow.with_options(task_runner=task_runner(cfg.workers, params.dask.address)))(cfg)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, _run)


if __name__ == "__main__":
    raise SystemExit(main())
