"""What every stage entry point shares: quiet offline settings, error handling, fan-out, outputs."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radiodiff.offline import apply_offline_defaults

apply_offline_defaults()  # before prefect, which reads its switches at import

from prefect import task  # noqa: E402
from prefect.futures import as_completed  # noqa: E402

from radiodiff.artifacts.layout import CURVES_DIR, METRICS_DIR, PLOTS_DIR  # noqa: E402
from radiodiff.errors import RUN_FAILURE_EXIT, USER_ERROR_EXIT, RunFailure, UserError  # noqa: E402
from radiodiff.io import atomic_write_text, safe_child  # noqa: E402


def run_stage(body: Callable[[], Any]) -> int:
    """Run a stage body; a `UserError` becomes one line on stderr and exit code 2, a
    `RunFailure` (out of memory, a diverged loss) one line and exit code 3: both fail again
    if retried, so the Prefect flow does not retry them."""
    try:
        body()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except RunFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return RUN_FAILURE_EXIT
    return 0


@dataclass(frozen=True, kw_only=True)
class Launch:
    """How a training stage spreads over `LoopConfig.devices` processes under torchrun.

    - module: the stage's module, re-run as `python -m module` by every rank.
    - section: where `loop` sits in params (`vae.train`), as errors name it.
    - loop(params) -> LoopConfig: the stage's training settings (their `devices`, `device`).

    Every rank runs the same stage body; inside it, `distributed.is_main()` gates what only
    rank 0 does (tracking, output files), and `rank_flow` gives rank 0 alone a Prefect flow run.
    """

    module: str
    section: str
    loop: Callable[[Any], Any]


def stage_main(argv: list[str] | None, description: str, body: Callable[[Any], Any],
               launch: Launch | None = None) -> int:
    """The command line of a stage: `--params FILE`, parsed once, handed to `body(params)`
    with torch given the machine's cores; a training stage passes `launch` to run on several
    devices. Returns the exit code."""
    import argparse

    from radiodiff.config import load_params

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    exit_code = 0

    def staged() -> None:
        nonlocal exit_code
        exit_code = _run_or_launch(load_params(args.params), args.params, body, launch)

    return run_stage(staged) or exit_code


def _run_or_launch(params: Any, params_path: str, body: Callable[[Any], Any], launch: Launch | None) -> int:
    """Run the stage in this process, or, when it trains on several devices and torchrun has
    not started this process, re-run it under torchrun and return that run's exit code. More
    GPUs than are visible is refused here, as one line, before torchrun starts any process."""
    from radiodiff.devices import check_device_count
    from radiodiff.training import distributed

    devices = 1 if launch is None else launch.loop(params).devices
    if devices > 1 and not distributed.launched():
        check_device_count(devices, launch.loop(params).device, where=launch.section)
        return distributed.launch(launch.module, ["--params", params_path], devices=devices)
    use_all_cores()
    with distributed.process_group():
        body(params)
    return 0


PARENT_TASK_RUN_ENV = "RADIODIFF_PREFECT_PARENT_TASK_RUN"  # set by pipelines/flows.py for its stage processes


def rank_flow(flow: Any) -> Callable[..., Any]:
    """`flow` on rank 0, which reports to Prefect; its plain function on the other ranks of a
    DDP run, which run the same body beside it without a flow run (or a tracking run) of their own.

    Started by the pipeline flow (`pipelines/flows.py` sets `RADIODIFF_PREFECT_PARENT_TASK_RUN`
    to the task run of the stage), the flow run is created as a child of that task run: the
    stages are subflows of the pipeline run, one tree in the Prefect UI, though each runs in its
    own `dvc repro` process."""
    from radiodiff.training import distributed

    if not distributed.is_main():
        return flow.fn
    parent = os.environ.get(PARENT_TASK_RUN_ENV)
    return flow if not parent else functools.partial(_run_as_child, flow, parent)


def _run_as_child(flow: Any, parent_task_run: str, *args: Any, **kwargs: Any) -> Any:
    """Run `flow(*args, **kwargs)` as a flow run whose parent is task run `parent_task_run`."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow
    from prefect.states import Pending
    from prefect.utilities.callables import get_call_parameters

    parameters = get_call_parameters(flow.fn, args, kwargs)
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(flow=flow, parameters=flow.serialize_parameters(parameters), state=Pending(),
                                          parent_task_run_id=UUID(parent_task_run))
    return run_flow(flow, flow_run=flow_run, parameters=parameters)


def publish_training(run: Any, stage: str | None, *, metrics: dict, figure: Any, figure_name: str, model_path: Path,
                     model_name: str, model_view: Any, example: Any) -> None:
    """What every training stage publishes: metrics (MLflow + `metrics/{stage}.json`, unless
    `stage` is None: a stage that trains several models writes one file for all), its figure
    (MLflow + `plots/{figure_name}`), the model file as a checkpoint artifact, and an MLflow
    model with a signature inferred from `example`."""
    run.log(metrics)
    run.log_figure(figure, Path(figure_name).name)  # the run's own: no folder needed inside it
    save_figure(figure, figure_name)
    run.log_artifact(model_path, folder="checkpoint")
    run.log_model(model_view, model_name, example)
    if stage is not None:
        write_metrics(stage, metrics)


def task_runner(workers: int, scheduler_address: str | None = None):
    """A Dask-backed Prefect task runner: an existing scheduler when `RADIODIFF_DASK_ADDRESS`
    (a worker's own setting, so it wins) or `scheduler_address` (params `dask.address`) is set,
    else a local cluster of `workers` one-thread processes."""
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner  # a declared dependency

    address = os.environ.get("RADIODIFF_DASK_ADDRESS") or scheduler_address
    if address:
        return DaskTaskRunner(address=address)
    if workers <= 1:
        return ThreadPoolTaskRunner(max_workers=1)
    # The dashboard on loopback and a free port: the default :8787 is shared by every cluster
    # on the machine and open to the network.
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": "127.0.0.1:0"})


@task(retries=1, retry_delay_seconds=1)
def _apply(fn: Callable, item: Any) -> Any:
    return fn(item)


def prefect_map(fn: Callable, items: list) -> Iterable:
    """Fan `fn` out over `items` as Prefect tasks on the flow's task runner; yield results as
    they finish. Must be called inside a flow."""
    futures = [_apply.submit(fn, item) for item in items]
    for future in as_completed(futures):
        yield future.result()


def write_curve(curve: Any, stage: str, stem: str = "") -> list[Path]:
    """Write a training `Curve` as DVC plot data in `plots/curves/{stage}/`."""
    return curve.write(CURVES_DIR / stage, stem)


def write_metrics(name: str, metrics: dict) -> Path:
    """Write `metrics/{name}.json` (DVC metrics; values or one level of named groups) atomically."""
    path = safe_child(METRICS_DIR, f"{name}.json")
    atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def save_figure(figure: Any, name: str) -> Path:
    """Save a matplotlib figure as `plots/{name}` atomically and close it."""
    import matplotlib.pyplot as plt

    from radiodiff.io import atomic_path

    path = safe_child(PLOTS_DIR, name)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip("."), dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def use_all_cores() -> None:
    """Give torch the machine's cores, or `RADIODIFF_TORCH_THREADS` of them (the library never
    sets thread counts). On a shared machine, 1 can be faster: OpenMP's thread hand-off stalls
    when another process holds a core."""
    import torch

    threads = os.environ.get("RADIODIFF_TORCH_THREADS")
    # Under torchrun the processes of one node share its cores.
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(int(threads) if threads else max((os.cpu_count() or 1) // sharing, 1))


def example_sample(dataset_dir: Path, encodings: tuple = ()) -> dict:
    """One test sample as a batch of one (`gain` `[1,1,H,W]`, `cond` `[1,C,H,W]`): the input
    example that MLflow stores beside each logged model."""
    from radiodiff.data.dataset import RadioMapDataset

    item = RadioMapDataset(dataset_dir, "test", tuple(encodings), limit=1)[0]
    return {"gain": item["gain"][None], "cond": item["cond"][None]}
