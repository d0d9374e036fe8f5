"""What every stage entry point shares: quiet offline settings, error handling, fan-out, outputs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Offline and quiet by default; a user's own settings win.
for _name, _value in {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DVC_NO_ANALYTICS": "1",
    # Dask's workers log every start and stop at INFO; keep its errors only.
    "DASK_LOGGING__DISTRIBUTED": "error",
}.items():
    os.environ.setdefault(_name, _value)

from prefect import task  # noqa: E402
from prefect.futures import as_completed  # noqa: E402

from radiodiff.errors import UserError  # noqa: E402
from radiodiff.io import atomic_write_text  # noqa: E402

METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")


def run_stage(body: Callable[[], Any]) -> int:
    """Run a stage body; a `UserError` becomes one line on stderr and exit code 2."""
    try:
        body()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def stage_main(argv: list[str] | None, description: str, body: Callable[[Any], Any]) -> int:
    """The command line of a stage: `--params FILE`, parsed once, handed to `body(params)`
    with torch given the machine's cores."""
    import argparse

    from radiodiff.config import load_params

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    use_all_cores()
    return run_stage(lambda: body(load_params(args.params)))


def publish_training(run: Any, stage: str, *, metrics: dict, figure: Any, figure_name: str, model_path: Path,
                     model_name: str, model_view: Any, example: Any) -> None:
    """What every training stage publishes: metrics (MLflow + `metrics/{stage}.json`), its figure
    (MLflow + `plots/`), the model file as a checkpoint artifact, and an MLflow model with a
    signature inferred from `example`."""
    run.log(metrics)
    run.log_figure(figure, figure_name)
    save_figure(figure, figure_name)
    run.log_artifact(model_path, folder="checkpoint")
    run.log_model(model_view, model_name, example)
    write_metrics(stage, metrics)


def task_runner(workers: int, scheduler_address: str | None = None):
    """A Dask-backed Prefect task runner: an existing scheduler when `scheduler_address` (or
    `RADIODIFF_DASK_ADDRESS`) is set, else a local cluster of `workers` one-thread processes."""
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner  # a declared dependency

    address = scheduler_address or os.environ.get("RADIODIFF_DASK_ADDRESS")
    if address:
        return DaskTaskRunner(address=address)
    if workers <= 1:
        return ThreadPoolTaskRunner(max_workers=1)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})


@task(retries=1, retry_delay_seconds=1)
def _apply(fn: Callable, item: Any) -> Any:
    return fn(item)


def prefect_map(fn: Callable, items: list) -> Iterable:
    """Fan `fn` out over `items` as Prefect tasks on the flow's task runner; yield results as
    they finish. Must be called inside a flow."""
    futures = [_apply.submit(fn, item) for item in items]
    for future in as_completed(futures):
        yield future.result()


def write_metrics(name: str, metrics: dict[str, float]) -> Path:
    """Write `metrics/{name}.json` (DVC metrics) atomically."""
    path = METRICS_DIR / f"{name}.json"
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def save_figure(figure: Any, name: str) -> Path:
    """Save a matplotlib figure as `plots/{name}` atomically and close it."""
    import matplotlib.pyplot as plt

    from radiodiff.io import atomic_path

    path = PLOTS_DIR / name
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip("."), dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


DATASET_DIR = Path("data/prepared")
MODELS_DIR = Path("models")
WORK_DIR = Path("data/cache/runs")  # resumable training checkpoints (outside DVC's outs)


def use_all_cores() -> None:
    """Give torch the machine's cores, or `RADIODIFF_TORCH_THREADS` of them (the library never
    sets thread counts). On a shared machine, 1 can be faster: OpenMP's thread hand-off stalls
    when another process holds a core."""
    import torch

    threads = os.environ.get("RADIODIFF_TORCH_THREADS")
    torch.set_num_threads(int(threads) if threads else max(os.cpu_count() or 1, 1))


def example_sample(dataset_dir: Path, encodings: tuple = ()) -> dict:
    """One test sample as a batch of one (`gain` `[1,1,H,W]`, `cond` `[1,C,H,W]`): the input
    example that MLflow stores beside each logged model."""
    from radiodiff.data.dataset import RadioMapDataset

    item = RadioMapDataset(dataset_dir, "test", tuple(encodings), limit=1)[0]
    return {"gain": item["gain"][None], "cond": item["cond"][None]}
