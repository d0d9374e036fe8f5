"""The fan-out stages on a 2-worker Dask cluster give exactly what the serial run gives:
prepare's dataset files byte for byte, and build_bank's midpoint latents entry for entry.

The cluster is a local one started here and reached by its scheduler address, as a GPU site's
cluster is (params `dask.address`); one cluster for the module keeps its workers warm."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from radiodiff.config import SplitSizes
from tests.conftest import TINY_DATA

KEYS = ["scene_id", "cell", "seed", "t_mid", "model_hash", "sampler_hash"]


@pytest.fixture(scope="module")
def prefect_api():
    """A temporary Prefect server for the in-process flows, one per module (6-9 s on a quiet machine)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):  # a busy shared machine starts it slowly
        yield


@pytest.fixture(scope="module")
def dask_address():
    """The scheduler address of a 2-process local Dask cluster (no dashboard)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def isolated(tmp_path, monkeypatch, mlflow_store):
    """Stage side outputs (metrics/, plots/) in `tmp_path`, runs in a temporary MLflow store,
    and a local cluster whatever the caller's environment says."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RADIODIFF_DASK_ADDRESS", raising=False)
    return tmp_path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_prepare_on_two_dask_workers_equals_the_serial_run(isolated, prefect_api, dask_address):
    from pipelines._stage import task_runner
    from pipelines.prepare import prepare_flow

    datasets = {}
    for workers in (1, 2):  # separate shard caches: both runs simulate every map
        cfg = replace(TINY_DATA, maps=SplitSizes(train=2, val=1, test=1), tx_per_map=2, workers=workers)
        root = isolated / f"workers{workers}"
        runner = task_runner(workers, dask_address if workers > 1 else None)
        prepare_flow.with_options(task_runner=runner)(
            cfg, dataset_dir=str(root / "data"), cache_dir=str(root / "cache"))
        datasets[workers] = _files(root / "data")
    assert "index.parquet" in datasets[1] and any(name.endswith("_gain.npy") for name in datasets[1])
    assert datasets[2] == datasets[1]


def _bank_rows(bank_dir: Path) -> list[dict]:
    table = pq.ParquetDataset(sorted(bank_dir.glob("part-*.parquet"))).read(columns=[*KEYS, "latent", "shape", "dtype"])
    return sorted(table.to_pylist(), key=lambda row: [row[key] for key in KEYS])


@pytest.mark.slow
def test_build_bank_on_two_dask_workers_equals_the_serial_run(isolated, prefect_api, dask_address, dataset, vae_file,
                                                             ldm_file, kc_ldm_file):
    from pipelines._stage import task_runner
    from pipelines.build_bank import build_bank_flow
    from radiodiff.config import FluxConfig

    models = isolated / "models"
    models.mkdir()
    (models / "alt").mkdir()
    for source, name in ((vae_file[0], "vae.pt"), (ldm_file[0], "ldm.pt"), (kc_ldm_file[0], "alt/kc.pt")):
        shutil.copy2(source, models / name)
    banks = {}
    for workers in (1, 2):
        # Batches of two: a batch of 4 and four of 1 differ by 1-2 float32 ulps (batched
        # convolutions round differently), so chunks must hold whole batches whatever the
        # worker count (1 worker: chunks of 2 scenes; 2 workers: 1, rounded up to 2).
        cfg = FluxConfig(t_mids=(30, 10), t_mid=30, prefix_steps=2, seeds=(0, 1), batch_size=2, workers=workers)
        bank_dir = isolated / f"bank{workers}"
        runner = task_runner(workers, dask_address if workers > 1 else None)
        build_bank_flow.with_options(task_runner=runner)(  # each run computes every midpoint in its own work area
            cfg, ("kc",), dataset_dir=str(dataset / "data"), models_dir=str(models), bank_dir=str(bank_dir),
            work_dir=str(isolated / f"bank-work{workers}"))
        banks[workers] = _bank_rows(bank_dir)
    assert len(banks[1]) >= 2 * 2 * 4  # t_mids x seeds x (3 train + 1 test layouts), at least
    assert banks[2] == banks[1]

