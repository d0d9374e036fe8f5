"""Crashes mid-work: each test SIGKILLs a driver subprocess (tests/fault_scripts/) doing real
work at two or more points chosen by a seeded RNG, restarts it, and checks that nothing is
lost or torn and that the end result equals an uninterrupted run's.

Kills come from outside (after a progress line, or once some files exist: the exact moment
races with the work, which is the point) and from inside a write (the driver SIGKILLs itself
halfway through a checkpoint or Parquet part, which an outside kill cannot aim at). What the
tests assert never depends on where exactly an outside kill landed.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from radiodiff.bank.schema import KEY_COLUMNS
from radiodiff.training.checkpoint import read_payload
from tests.conftest import TINY_DATA
from tests.fault_scripts.bank import fill, flux_config
from tests.fault_scripts.harness import Driver, script
from tests.fault_scripts.prepare import CONFIG as PREPARE
from tests.fault_scripts.train import train

pytestmark = pytest.mark.slow
KILLED = -signal.SIGKILL
TIMING = {"steps_per_s", "train_seconds", "wall_seconds", "target_ms_per_map"}


def _same(a, b) -> bool:
    """Exact equality of nested containers of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def _untimed(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in TIMING}


def _metrics(driver: Driver) -> dict:
    return json.loads(next(line for line in driver.lines if line.startswith("metrics ")).removeprefix("metrics "))


# --- train_vae / train_ldm --------------------------------------------------------------------

def _checkpoint_folder(work: Path, kind: str) -> Path:
    (folder,) = (work / kind).iterdir()  # one run folder: same config, same inputs
    return folder


def _newest_step(folder: Path) -> int:
    """The newest checkpoint's step (0 if none), after checking that every checkpoint loads."""
    steps = [read_payload(path)["step"] for path in sorted(folder.glob("step_*.pt"))]
    return max(steps, default=0)


def _first_step(driver: Driver) -> int:
    return int(next(line for line in driver.lines if line.startswith("step ")).split()[1])


@pytest.mark.parametrize("kind, seed", [("vae", 11), ("ldm", 12)])
def test_training_killed_twice_ends_with_the_weights_of_an_uninterrupted_run(kind, seed, dataset, vae_file,
                                                                               tmp_path):
    rng = random.Random(seed)
    work, out = tmp_path / "work", tmp_path / f"{kind}.pt"
    vae = ["--vae", str(vae_file[0])] if kind == "ldm" else []
    args = (kind, str(dataset / "data"), str(work), str(out), *vae)

    outside = rng.randint(2, 5)  # point 1: SIGKILL from outside once step `outside` is logged
    first = Driver(script("train.py", *args), log_dir=tmp_path)
    first.wait_for_line(lambda line: line == f"step {outside}")
    assert first.kill() == KILLED
    folder = _checkpoint_folder(work, kind)
    resumed = _newest_step(folder)

    inside = rng.choice([step for step in (2, 4, 6, 8) if step > resumed])  # point 2: inside a checkpoint write
    second = Driver(script("train.py", *args, "--die-in-save", str(inside)), log_dir=tmp_path)
    assert second.finish(check=False) == KILLED
    assert _first_step(second) == resumed + 1  # resumed from the newest checkpoint, not from scratch
    assert not (folder / f"step_{inside:08d}.pt").exists()  # the torn write never took the name
    assert list(folder.glob(f".step_{inside:08d}.pt.*.tmp"))  # ... and it really was cut halfway
    resumed = _newest_step(folder)
    assert resumed == inside - 2

    last = Driver(script("train.py", *args), log_dir=tmp_path)
    last.finish()
    assert _first_step(last) == resumed + 1
    assert not list(folder.glob(".*.tmp"))  # the next save cleared the dead write's temporary file

    with torch.random.fork_rng():
        straight = train(kind, dataset / "data", tmp_path / "straight", tmp_path / "straight.pt",
                         vae_file[0] if vae else None, log=lambda metrics, step: None)
    assert _untimed(_metrics(last)) == _untimed(straight)
    model, reference = (torch.load(path, weights_only=True) for path in (out, tmp_path / "straight.pt"))
    assert _same(model, reference)
    final, uninterrupted = (read_payload(_checkpoint_folder(w, kind) / "step_00000008.pt")
                            for w in (work, tmp_path / "straight"))
    for part in ("model", "ema", "optimizer", "loop_state"):
        assert _same(_untimed(final[part]), _untimed(uninterrupted[part])), part
    assert final["loop_state"]["train_seconds"] > 0  # the killed calls' training time is carried on


# --- prepare ----------------------------------------------------------------------------------

def _shards(cache: Path) -> dict[str, tuple[int, int, bytes]]:
    """Finished map shards by name: (inode, mtime in ns, bytes), to tell kept from rewritten."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in cache.glob("*/*.npz")}


def _simulated(driver: Driver, kind: str = "static") -> list[int]:
    """Map ids simulated by the driver, static maps or (kind "cars") their traffic twins."""
    return [int(line.split()[-1]) for line in driver.lines if line.startswith(f"simulate {kind} map ")]


def test_prepare_killed_twice_redoes_only_unfinished_maps_and_matches_an_uninterrupted_run(dataset, tmp_path):
    assert PREPARE == TINY_DATA  # so the session's `dataset` is the uninterrupted run
    rng = random.Random(21)
    out, cache = tmp_path / "data", tmp_path / "cache"

    done = rng.randint(1, 3)  # point 1: SIGKILL from outside once `done` of the 5 map shards exist
    first = Driver(script("prepare.py", str(out), str(cache)), log_dir=tmp_path)
    first.wait_until(lambda: len(list(cache.glob("*/*.npz"))) >= done)
    assert first.kill() == KILLED
    kept = _shards(cache)
    assert len(kept) >= done and not out.exists()

    second = Driver(script("prepare.py", str(out), str(cache), "--die-in-assemble"), log_dir=tmp_path)  # point 2
    assert second.finish(check=False) == KILLED
    simulated = _simulated(second)
    assert len(simulated) == len(set(simulated)) == 5 - len(kept)  # only the unfinished maps, once each
    assert sorted(_simulated(second, "cars")) == sorted(simulated)  # every map has traffic twins: once each too
    assert not {int(name[3:6]) for name in kept} & set(simulated)
    assert {name: _shards(cache)[name] for name in kept} == kept  # finished shards untouched
    assert not out.exists() and list(tmp_path.glob(".data.*.tmp"))  # killed inside assemble, nothing published

    last = Driver(script("prepare.py", str(out), str(cache)), log_dir=tmp_path)
    last.finish()
    assert _simulated(last) == [] and _metrics(last)["maps_reused"] == 5
    reference = dataset / "data"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())
    for path in out.iterdir():
        assert path.read_bytes() == (reference / path.name).read_bytes(), path.name


# --- build_bank -------------------------------------------------------------------------------

def _bank_rows(bank: Path) -> dict[tuple, bytes]:
    """Every row of every published part, keyed by (model, sampler, t_mid, scene, cell, seed);
    fails on a duplicate key."""
    rows = [row for part in sorted(bank.glob("part-*.parquet"))
            for row in pq.read_table(part, columns=[*KEY_COLUMNS, "latent"]).to_pylist()]
    keys = [tuple(row[name] for name in ("model_hash", "sampler_hash", "t_mid", "scene_id", "cell", "seed"))
            for row in rows]
    assert len(keys) == len(set(keys)), "duplicate bank rows"
    return dict(zip(keys, (row["latent"] for row in rows)))


def _verify(bank: Path) -> int:
    """`radiodiff bank verify` must pass; returns the entries it counted."""
    cli = Path(sys.executable).parent / "radiodiff"
    done = subprocess.run([str(cli), "bank", "verify", str(bank)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split(",")[1].split()[0])


def test_bank_build_killed_three_times_keeps_the_previous_bank_and_finishes_without_torn_or_duplicate_rows(
        dataset, ldm_file, vae_file, tmp_path):
    rng = random.Random(31)
    models, data, bank = (str(ldm_file[0]), str(vae_file[0])), dataset / "data", tmp_path / "bank"
    fill(*map(Path, models), data, bank, flux_config((30,), (0,)))  # the previous bank: 4 layouts, 1 part
    previous = _bank_rows(bank)
    shutil.copytree(bank, tmp_path / "straight")
    grow = (*models, str(data), str(bank), "--t-mids", "30", "20", "10", "--seeds", "0", "1")  # 5 new parts

    parts = 1 + rng.randint(1, 2)  # point 1: SIGKILL from outside once that many parts exist
    first = Driver(script("bank.py", *grow), log_dir=tmp_path)
    first.wait_until(lambda: len(list(bank.glob("part-*.parquet"))) >= parts)
    assert first.kill() == KILLED
    rows = _bank_rows(bank)
    assert {key: rows[key] for key in previous} == previous and _verify(bank) == len(rows)
    assert len(rows) % 4 == 0  # whole parts only

    # point 2: between a part's publishing and its record line, the window no signal handler covers
    gap = Driver(script("bank.py", *grow, "--die-after-publish", "1"), log_dir=tmp_path)
    assert gap.finish(check=False) == KILLED
    published = _bank_rows(bank)
    assert published.items() >= rows.items() and _verify(bank) == len(published) == len(rows) + 4
    rows = published

    torn = rng.randint(1, 5 - (len(rows) // 4 - 1))  # point 3: halfway through writing a later part
    second = Driver(script("bank.py", *grow, "--die-in-write", str(torn)), log_dir=tmp_path)
    assert second.finish(check=False) == KILLED
    assert list(bank.glob(".part-*.tmp"))  # the torn file exists, unpublished
    before_last = _bank_rows(bank)
    assert before_last.items() >= rows.items() and _verify(bank) == len(before_last) == len(rows) + 4 * (torn - 1)

    last = Driver(script("bank.py", *grow), log_dir=tmp_path)
    last.finish()
    assert last.lines[-1] == f"written {24 - len(before_last)}"
    fill(*map(Path, models), data, tmp_path / "straight", flux_config((30, 20, 10), (0, 1)))
    assert _bank_rows(bank) == _bank_rows(tmp_path / "straight") and _verify(bank) == 24
