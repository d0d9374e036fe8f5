"""The prepare stage: shards, resume, dataset files, index, sources and bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from radiodiff.config import PrepareConfig, SplitSizes, TargetSource
from radiodiff.data.assemble import INDEX_SCHEMA, read_index
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.data.conditions import TxEncoding
from radiodiff.data.prepare import plan_jobs, run_prepare, shard_key, shard_path
from radiodiff.data.split import radiounet_split
from radiodiff.errors import UserError
from tests.conftest import REPO_ROOT

TINY = PrepareConfig(maps=SplitSizes(train=2, val=1, test=1), tx_per_map=3, resolution=32, workers=1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    result = run_prepare(TINY, out_dir=root / "data", cache_dir=root / "cache", progress=False)
    return root, result


def test_dataset_files_and_index(prepared):
    root, result = prepared
    index = read_index(root / "data")
    assert len(index) == 4 * 3 == len(result.index)
    assert result.metrics["samples_train"] == 6 and result.metrics["maps_reused"] == 0
    splits = radiounet_split()
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        rows = index[index["split"] == split]
        assert set(rows["map_id"]) == set(splits[split][:count].tolist())  # RadioUNet order, no mixing
        gains = np.load(root / "data" / f"{split}_gain.npy", mmap_mode="r")
        scenes = np.load(root / "data" / f"{split}_scenes.npy", mmap_mode="r")
        assert gains.shape == (3 * count, 32, 32) and gains.dtype == np.float32
        assert scenes.shape == (count, 2, 32, 32)
        for row in rows.itertuples():
            gain, buildings = gains[row.offset], scenes[row.scene_offset, 0] > 0
            assert np.all(gain[buildings] == 0)
            assert not buildings[row.tx_row, row.tx_col]
            assert gain[row.tx_row, row.tx_col] >= np.percentile(gain[~buildings], 99)
            assert 0 <= gain.min() and gain.max() <= 1


def test_tx_choice_is_seeded_and_distinct():
    jobs = plan_jobs(TINY)
    assert jobs == plan_jobs(TINY)
    assert all(len(set(job.tx_ids)) == 3 for job in jobs)
    other = plan_jobs(PrepareConfig(maps=TINY.maps, tx_per_map=3, resolution=32, seed=1))
    assert [j.tx_ids for j in jobs] != [j.tx_ids for j in other]


def test_interrupted_run_redoes_only_missing_shards(prepared, tmp_path):
    root, _ = prepared
    cache = root / "cache" / shard_key(TINY)
    jobs = plan_jobs(TINY)
    victim = shard_path(jobs[1], cache)
    victim.unlink()  # as if the run died while this map was simulated
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    result = run_prepare(TINY, out_dir=tmp_path / "again", cache_dir=root / "cache", progress=False)
    assert result.metrics["maps_reused"] == len(jobs) - 1
    assert victim.is_file()
    assert all(cache.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in before.items())
    for name in ("train_gain.npy", "train_scenes.npy", "train_los.npy", "test_gain.npy", "index.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == (root / "data" / name).read_bytes()


def test_dataset_items(prepared):
    root, _ = prepared
    encodings = (TxEncoding.LOG_DISTANCE, TxEncoding.LOS, TxEncoding.LOS_LOG_DISTANCE)
    dataset = RadioMapDataset(root / "data", "train", encodings)
    item = dataset[4]
    assert item["gain"].shape == (1, 32, 32) and item["cond"].shape == (6, 32, 32)
    row, col = item["tx"].tolist()
    assert item["cond"][1, row, col] == 1 and item["cond"][1].sum() == 1
    assert item["cond"][3, row, col] == 1  # line of sight to itself


def test_radiomapseer_source(tmp_path):
    with pytest.raises(UserError, match="RadioMapSeer folder not found"):
        run_prepare(PrepareConfig(source=TargetSource.RADIOMAPSEER, radiomapseer_dir=str(tmp_path / "nope")),
                    out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "out").exists()
    cfg = PrepareConfig(source=TargetSource.RADIOMAPSEER, radiomapseer_dir=str(tmp_path / "rms"),
                        maps=SplitSizes(train=1, val=0, test=0), tx_per_map=2, resolution=64)
    gain_dir = tmp_path / "rms" / "gain" / "DPM"
    gain_dir.mkdir(parents=True)
    (job,) = plan_jobs(cfg)
    for value, tx_id in zip((100, 200), job.tx_ids):
        Image.fromarray(np.full((256, 256), value, np.uint8)).save(gain_dir / f"{job.map_id}_{tx_id}.png")
    result = run_prepare(cfg, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    gains = np.load(tmp_path / "out" / "train_gain.npy")
    scenes = np.load(tmp_path / "out" / "train_scenes.npy")
    free = scenes[0, 0] == 0
    assert np.allclose(gains[0][free], 100 / 255) and np.allclose(gains[1][free], 200 / 255)
    assert result.metrics["samples_train"] == 2


def _run_stage(cwd, *args):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/mlruns.db", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "pipelines.prepare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ("prepare: {tx_per_mapp: 3}\n", "unknown key(s) tx_per_mapp"),
        ("prepare: {resolution: big}\n", "prepare.resolution: expected int"),
        ("prepare: {source: radiomapseer, radiomapseer_dir: /nonexistent/rms}\n", "RadioMapSeer folder not found"),
    ],
)
def test_stage_bad_input_is_one_line_and_no_output(tmp_path, params, fragment):
    (tmp_path / "params.yaml").write_text(params)
    done = _run_stage(tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and fragment in lines[-1]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "prepared").exists() and not (tmp_path / "metrics").exists()


def test_index_schema_is_explicit(prepared):
    import pyarrow.parquet as pq

    root, _ = prepared
    assert pq.read_schema(root / "data" / "index.parquet").equals(INDEX_SCHEMA, check_metadata=False)


def test_assemble_streams_shards_into_the_split_files(tmp_path):
    """The split files hold every shard in order, and assembling never holds the whole split
    in memory: peak allocations stay near one shard, far below the split's size."""
    import tracemalloc

    from radiodiff.data.assemble import assemble

    rng = np.random.default_rng(0)
    shards, gains = [], []
    for map_id in range(8):
        gain = rng.random((10, 64, 64), dtype=np.float32)
        path = tmp_path / f"shard{map_id}.npz"
        np.savez(path, gain=gain, los=(gain > 0.5).astype(np.uint8), buildings=np.zeros((64, 64), bool),
                 cars=np.zeros((64, 64), bool), tx=np.zeros((10, 2), np.int64), tx_ids=np.arange(10),
                 with_cars=np.arange(10) >= 8)
        shards.append(("train", map_id, path))
        gains.append(gain)
    tracemalloc.start()
    index = assemble(shards, tmp_path / "data")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    split_bytes = sum(g.nbytes for g in gains)
    assert np.array_equal(np.load(tmp_path / "data" / "train_gain.npy"), np.concatenate(gains))
    assert len(index) == 80 and index["offset"].tolist() == list(range(80))
    assert index["cars"].tolist() == [k >= 8 for k in range(10)] * 8
    assert peak < split_bytes / 2, f"peak {peak} bytes for a {split_bytes}-byte split"


def test_traffic_samples_differ_from_their_static_twin_only_in_the_cars(dataset):
    """The shared tiny dataset has `dynamic` 0.5: two of each map's four Tx come twice, once
    with the map's cars. A pair shares map, Tx, line of sight and buildings; only the channels
    of the cars (their mask and the shadow cast from the Tx) and the gain differ, and the static
    sample sees no cars."""
    from radiodiff.config import ConditionConfig
    from radiodiff.data.conditions import channel_names
    from radiodiff.data.dataset import RadioMapDataset
    from radiodiff.evaluation.scenarios import traffic_rows
    from tests.conftest import TINY_DATA

    encodings = ConditionConfig().encodings
    names = channel_names(encodings)
    of_cars = [names.index("cars"), names.index("car_shadow")]
    other = [c for c in range(len(names)) if c not in of_cars]
    for split in ("train", "test"):
        data = RadioMapDataset(dataset / "data", split, encodings)
        layouts = data.index["map_id"].unique().tolist()
        twins, traffic = traffic_rows(data.index, layouts, per_scene=10)
        assert len(traffic) == TINY_DATA.cars_per_map * len(layouts) == 2 * len(layouts)
        for static_row, cars_row in zip(twins, traffic):
            static, cars = data[static_row], data[cars_row]
            assert not static["cars"] and cars["cars"]
            assert (static["map_id"], static["tx_id"]) == (cars["map_id"], cars["tx_id"])
            assert torch.equal(static["tx"], cars["tx"])
            assert torch.equal(static["cond"][other], cars["cond"][other])
            assert static["cond"][of_cars].eq(0).all()
            assert all(cars["cond"][c].gt(0).any() for c in of_cars)
            assert not torch.equal(static["gain"], cars["gain"])  # the cars shadow some pixels


def test_the_static_tx_choice_does_not_depend_on_the_traffic_share():
    from dataclasses import replace

    static, dynamic = plan_jobs(TINY), plan_jobs(replace(TINY, dynamic=0.5))
    assert [j.tx_ids for j in static] == [j.tx_ids for j in dynamic]
    assert all(j.car_tx_ids == () for j in static)
    assert all(len(j.car_tx_ids) == 2 and set(j.car_tx_ids) <= set(j.tx_ids) for j in dynamic)
