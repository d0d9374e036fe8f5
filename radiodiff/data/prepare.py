"""The `prepare` stage: (map, Tx) samples at the model's resolution, as resumable map shards.

Each map becomes one shard in a cache folder keyed by everything that shapes it, written
atomically; an interrupted run redoes only the maps whose shard is missing. `assemble`
then writes the dataset proper: per split a memory-mappable `{split}_gain.npy` `[N, H, W]`
and `{split}_scenes.npy` `[M, 2, H, W]` (buildings, cars), plus `index.parquet`.

Traffic samples (`prepare.dynamic` > 0): a seeded share of each map's Tx is rendered a second
time with the map's cars as obstacles. Such a sample is the static sample's twin: same map,
same Tx, only the cars differ, so one model learns both and `evaluate` can pair them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radiodiff.config import SOURCE_MAP_SIZE, PrepareConfig, TargetSource
from radiodiff.data.conditions import line_of_sight
from radiodiff.data.geometry import load_geometry
from radiodiff.data.resample import coverage, downsample_gain, majority
from radiodiff.data.split import radiounet_split
from radiodiff.data.targets import check_gain_files, radiomapseer_gray, simulated_gray
from radiodiff.data.assemble import assemble
from radiodiff.io import atomic_path, safe_child

SHARD_FORMAT = 3  # bump when the shard layout or the target pipeline changes


@dataclass(frozen=True)
class MapJob:
    """One map to turn into a shard: which Tx (published ids), which of them also get a
    traffic sample (`car_tx_ids`, a subset of `tx_ids`), and the split."""

    map_id: int
    split: str
    tx_ids: tuple[int, ...]
    car_tx_ids: tuple[int, ...] = ()


# A mapper runs `fn` over `items` and yields results as they finish; the Prefect flow passes
# one backed by its task runner, the library's default is serial.
Mapper = Callable[[Callable, list], Iterable]


def serial_map(fn: Callable, items: list) -> Iterable:
    """Run `fn` over `items` one after another in this process."""
    return (fn(item) for item in items)


def plan_jobs(cfg: PrepareConfig) -> list[MapJob]:
    """Choose maps (RadioUNet split order) and, per map, `tx_per_map` seeded Tx sites whose
    low-resolution pixel is free (so the Tx never lands on a downsampled building), and of
    those `cars_per_map` for traffic samples (a separate seeded draw: the static choice does not
    depend on `dynamic`)."""
    geometry = load_geometry()
    factor = SOURCE_MAP_SIZE // cfg.resolution
    jobs = []
    for split, map_ids in radiounet_split().items():
        for map_id in map_ids[: getattr(cfg.maps, split)]:
            scene = geometry.scene(int(map_id))
            low_buildings = majority(scene.buildings, factor)
            usable = [k for k in range(len(scene.tx_sites)) if not _low_res_blocked(scene.tx(k), low_buildings, factor)]
            rng = np.random.default_rng([cfg.seed, int(map_id)])
            chosen = sorted(int(k) for k in rng.choice(usable, size=min(cfg.tx_per_map, len(usable)), replace=False))
            car_rng = np.random.default_rng([cfg.seed, int(map_id), 1])
            with_cars = car_rng.choice(chosen, size=min(cfg.cars_per_map, len(chosen)), replace=False)
            jobs.append(MapJob(int(map_id), split, tuple(chosen), tuple(sorted(int(k) for k in with_cars))))
    return jobs


def _low_res_blocked(tx: tuple[int, int], low_buildings: np.ndarray, factor: int) -> bool:
    return bool(low_buildings[tx[0] // factor, tx[1] // factor])


def simulator_fingerprint() -> str:
    """A hash of the simulator's source: any change to it invalidates cached shards by itself."""
    import radiodiff.sim

    sha = hashlib.sha256()
    for path in sorted(Path(radiodiff.sim.__file__).parent.glob("*.py")):
        sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()[:16]


def shard_key(cfg: PrepareConfig) -> str:
    """A short hash of every setting that changes a shard's content."""
    fields = {
        "format": SHARD_FORMAT,
        "source": cfg.source.value,
        "radiomapseer_dir": str(Path(cfg.radiomapseer_dir).resolve()) if cfg.radiomapseer_dir else None,
        "simulator": simulator_fingerprint() if cfg.source is TargetSource.SIMULATE else None,
        "resolution": cfg.resolution,
        "dynamic": cfg.dynamic,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def build_shard(job: MapJob, cfg: PrepareConfig, cache_dir: Path) -> Path:
    """Make (or reuse) the shard of one map: an `.npz` with, per sample (the K static ones,
    then the D traffic twins), `gain [K+D,H,W]` float32 in [0,1], `los [K+D,H,W]` bool,
    `tx [K+D,2]` low-res pixels, `tx_ids [K+D]`, `with_cars [K+D]` bool; per map `buildings`,
    `cars` `[H,W]` float32 (the share of each pixel the map's cars cover, used by the traffic
    samples) and `seconds` (target time)."""
    path = shard_path(job, cache_dir)
    if path.is_file():
        return path
    scene = load_geometry().scene(job.map_id)
    factor = SOURCE_MAP_SIZE // cfg.resolution
    tx_ids = list(job.tx_ids) + list(job.car_tx_ids)
    with_cars = np.array([False] * len(job.tx_ids) + [True] * len(job.car_tx_ids))
    start = time.perf_counter()
    gray = np.concatenate([_gray(scene, cfg, list(job.tx_ids), dynamic=False),
                           _gray(scene, cfg, list(job.car_tx_ids), dynamic=True)])
    seconds = time.perf_counter() - start
    gain = downsample_gain(gray.astype(np.float32) / 255.0, scene.buildings, factor)
    low_buildings = majority(scene.buildings, factor)
    low_tx = np.array([scene.tx(k) for k in tx_ids], dtype=np.int64) // factor
    arrays = {
        "gain": gain,
        # The LOS mask is the one costly condition encoding: computed once here, per sample
        # (over the buildings only: cars are low obstacles, a traffic twin shares its LOS).
        "los": np.stack([line_of_sight(low_buildings, row, col) for row, col in low_tx]),
        "buildings": low_buildings,
        "cars": coverage(scene.cars, factor),
        "tx": low_tx,
        "tx_ids": np.array(tx_ids, dtype=np.int64),
        "with_cars": with_cars,
        "seconds": np.float64(seconds),
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def _gray(scene, cfg: PrepareConfig, tx_ids: list[int], *, dynamic: bool) -> np.ndarray:
    """`[K, 256, 256]` uint8 targets of `tx_ids`, static or with the scene's cars."""
    if not tx_ids:
        return np.zeros((0, *scene.buildings.shape), np.uint8)
    if cfg.source is TargetSource.SIMULATE:
        return simulated_gray(scene, [scene.tx(k) for k in tx_ids], dynamic=dynamic)
    return radiomapseer_gray(Path(cfg.radiomapseer_dir), scene.map_id, tx_ids, dynamic=dynamic)


def build_shards(jobs: list[MapJob], cfg: PrepareConfig, cache_dir: Path) -> list[Path]:
    """`build_shard` for a chunk of maps (one unit of fan-out); each map is still its own shard."""
    return [build_shard(job, cfg, cache_dir) for job in jobs]


def _chunks(jobs: list[MapJob], workers: int) -> list[list[MapJob]]:
    # A few chunks per worker: enough to balance the load, few enough that the per-task
    # overhead of the orchestrator (about 0.4 s a task under Prefect) stays small.
    size = max(1, -(-len(jobs) // (4 * workers)))
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def shard_path(job: MapJob, cache_dir: Path) -> Path:
    """Where the shard of `job` lives; the name carries the map id and its Tx choice."""
    choice = ",".join(map(str, job.tx_ids)) + "|" + ",".join(map(str, job.car_tx_ids))
    digest = hashlib.sha256(choice.encode()).hexdigest()[:8]
    return safe_child(cache_dir, f"map{job.map_id:03d}_tx{digest}.npz")


def check_source(cfg: PrepareConfig) -> None:
    """Fail early, before any work, when the chosen target source is unusable."""
    if cfg.source is TargetSource.RADIOMAPSEER:
        # Every gain file's header, here: a bad file found inside a fanned-out task would
        # surface as an orchestrator traceback (and a pointless retry) instead of one line.
        jobs = plan_jobs(cfg)
        check_gain_files(Path(cfg.radiomapseer_dir), [(job.map_id, k) for job in jobs for k in job.tx_ids],
                         dynamic=False)
        traffic = [(job.map_id, k) for job in jobs for k in job.car_tx_ids]
        if traffic:
            check_gain_files(Path(cfg.radiomapseer_dir), traffic, dynamic=True)


@dataclass(frozen=True)
class PrepareResult:
    """What `run_prepare` made: the index (one row per sample) and summary metrics."""

    index: pd.DataFrame
    metrics: dict[str, float]


def run_prepare(
    cfg: PrepareConfig, *, out_dir: Path, cache_dir: Path, map_fn: Mapper = serial_map, progress: bool = True
) -> PrepareResult:
    """Build every missing map shard (through `map_fn`), then assemble the dataset in `out_dir`."""
    from functools import partial

    from radiodiff.progress import Progress

    check_source(cfg)
    start = time.perf_counter()
    jobs = plan_jobs(cfg)
    cache = Path(cache_dir) / shard_key(cfg)
    reused = sum(shard_path(job, cache).is_file() for job in jobs)
    work = partial(build_shards, cfg=cfg, cache_dir=cache)
    with Progress(len(jobs), "prepare", unit="map", enabled=progress) as bar:
        for done in map_fn(work, _chunks(jobs, cfg.workers)):
            bar.update(len(done))
    index = assemble([(job.split, job.map_id, shard_path(job, cache)) for job in jobs], Path(out_dir))
    return PrepareResult(index, _metrics(index, jobs, cache, reused, time.perf_counter() - start))


def _metrics(index, jobs: list[MapJob], cache: Path, reused: int, seconds: float) -> dict[str, float]:
    target_seconds = []
    for job in jobs:
        with np.load(shard_path(job, cache)) as shard:
            target_seconds.append(float(shard["seconds"]) / len(shard["tx_ids"]))
    metrics = {f"samples_{split}": int((index["split"] == split).sum()) for split in ("train", "val", "test")}
    metrics["samples_with_cars"] = int(index["cars"].sum())
    metrics.update(
        maps=len(jobs),
        maps_reused=reused,
        target_ms_per_map=1000.0 * float(np.mean(target_seconds)) if target_seconds else 0.0,
        wall_seconds=seconds,
    )
    return metrics
