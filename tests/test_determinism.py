"""Determinism: with the same seeds and params, two fresh processes produce the same gain maps,
metrics, model weights and served maps, byte for byte. (`dvc repro` right after `dvc repro`
changing nothing is checked in tests/test_pipeline.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT

TIMINGS = {"steps_per_s", "train_seconds"}  # wall-clock measurements: the only metrics that may differ
PREDICTIONS = ("plain.png", "bank_miss.png", "bank_hit.png")


def fresh_run(root: Path) -> None:
    """One run, meant for its own process: the conftest's tiny prepare, train_vae and train_ldm
    in `root`, their metrics in `root/metrics.json`, then one map predicted three times (no
    bank, bank miss, bank hit) into `root/predictions`."""
    from radiodiff.cli import main
    from radiodiff.config import DiffusionConfig, LDMConfig, UNetConfig, VAEConfig
    from radiodiff.data.prepare import run_prepare
    from radiodiff.artifacts.denoiser import save_ldm
    from radiodiff.artifacts.vae import save_vae
    from radiodiff.stages.ldm import train_ldm
    from radiodiff.stages.vae import train_vae
    from tests.conftest import CONDITION, DATA, LOOP, TINY_DATA
    from tests.served import TX_POSITIONS, cli_args, served_folder

    torch.set_num_threads(1)  # as in the test process: float sums are bitwise equal only in the same order
    run_prepare(TINY_DATA, out_dir=root / "data", cache_dir=root / "cache", progress=False)
    vae_cfg = VAEConfig(base_channels=8, channel_mults=(1, 2, 4), data=DATA, train=LOOP)
    vae = train_vae(vae_cfg, dataset_dir=root / "data", work_dir=root / "work", log=lambda m, s: None, progress=False)
    save_vae(root / "models" / "vae.pt", vae.model, vae_cfg, scale_factor=vae.scale_factor)
    ldm_cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                        diffusion=DiffusionConfig(num_steps=50), sample_steps=2, data=DATA, train=LOOP)
    ldm = train_ldm(ldm_cfg, CONDITION, dataset_dir=root / "data", vae_path=root / "models" / "vae.pt",
                    work_dir=root / "work", log=lambda m, s: None, progress=False)
    save_ldm(root / "models" / "ldm.pt", ldm.model.unet, ldm_cfg, CONDITION, root / "models" / "vae.pt")
    (root / "metrics.json").write_text(json.dumps({"vae": vae.metrics, "ldm": ldm.metrics}))

    served = served_folder(root / "served", root / "models")
    (root / "predictions").mkdir()
    query = ("--buildings", str(served / "layouts" / "a.png"), "--tx", *map(str, TX_POSITIONS[3]))
    for name, bank in zip(PREDICTIONS, ((), ("--bank", str(root / "bank")), ("--bank", str(root / "bank")))):
        code = main(cli_args(served, root / "models", *query, *bank, "--out", str(root / "predictions" / name)))
        assert code == 0, name


def _start(root: Path) -> subprocess.Popen:
    root.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MPLCONFIGDIR=str(root / ".mpl"))
    code = ("import sys; from pathlib import Path; from tests.test_determinism import fresh_run; "
            "fresh_run(Path(sys.argv[1]))")
    return subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _untimed(metrics: dict) -> dict:
    assert all(TIMINGS <= set(stage) for stage in metrics.values())  # what is dropped is really there
    return {name: {k: v for k, v in stage.items() if k not in TIMINGS} for name, stage in metrics.items()}


@pytest.mark.slow
def test_two_fresh_runs_give_identical_maps_metrics_weights_and_predictions(tmp_path):
    roots = (tmp_path / "first", tmp_path / "second")
    processes = [_start(root) for root in roots]  # side by side: separate folders, no shared state
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    first, second = roots

    data = _files(first / "data")
    assert "index.parquet" in data and "train_gain.npy" in data and "test_gain.npy" in data
    assert data == _files(second / "data")  # the prepared gain maps, shards and index, byte for byte

    metrics = [_untimed(json.loads((root / "metrics.json").read_text())) for root in roots]
    assert metrics[0]["vae"]["test_nmse"] > 0 and metrics[0]["ldm"]["test_nmse"] > 0
    assert metrics[0] == metrics[1]

    for name in ("vae.pt", "ldm.pt"):
        weights = [torch.load(root / "models" / name, weights_only=True)["state_dict"] for root in roots]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0]), name

    predictions = [_files(root / "predictions") for root in roots]
    assert sorted(predictions[0]) == sorted(PREDICTIONS)
    assert predictions[0] == predictions[1]  # across runs
    assert len(set(predictions[0].values())) == 1  # within a run: no bank, miss and hit give the same bytes
