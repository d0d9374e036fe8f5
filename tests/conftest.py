"""Shared fixtures: a temporary MLflow store and the repository root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from radiodiff.config import (
    ConditionConfig, DataLoaderConfig, DiffusionConfig, LDMConfig, PrepareConfig, SplitSizes, UNetConfig, VAEConfig,
)
from radiodiff.data.prepare import run_prepare
from radiodiff.offline import apply_offline_defaults
from radiodiff.artifacts.denoiser import save_ldm
from radiodiff.artifacts.vae import save_vae
from radiodiff.stages.ldm import train_ldm
from radiodiff.stages.vae import train_vae
from radiodiff.training.config import LoopConfig, OptimConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

apply_offline_defaults()


def run_git(cwd: Path, *args: str) -> None:
    """`git *args` in `cwd` under a throwaway identity (a test's own repository)."""
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """Point MLflow at a fresh sqlite store inside `tmp_path`."""
    store = tmp_path / "mlruns"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("RADIODIFF_ARTIFACT_ROOT", str(store / "artifacts"))
    return store


def pytest_configure(config):
    """One torch thread: the test models are tiny, and on a shared 2-core machine OpenMP's
    thread hand-off made them 10-70x slower with two."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Back to one thread before every test: a stage entry point run in-process gives torch all
    cores, and tests that compare in-process results with subprocesses' bit for bit (the
    fault-injection ones) need the same thread count on both sides."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def close_figures():
    """Close every matplotlib figure a test leaves open: stage entry points draw their figures
    and hand them to the tracker, and a test that does not look at them should not pile them up."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:  # only where the test drew: importing pyplot costs
        sys.modules["matplotlib.pyplot"].close("all")


# A tiny real dataset (two of each map's four Tx also with cars) and toy models trained for a
# few steps, shared by the stage tests.
TINY_DATA = PrepareConfig(maps=SplitSizes(train=3, val=1, test=1), tx_per_map=4, dynamic=0.5, resolution=32,
                          workers=1)
LOOP = LoopConfig(total_steps=4, log_every=2, val_every=4, checkpoint_every=2,
                  optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, ema_start_step=0, ema_decay=0.5))
DATA = DataLoaderConfig(batch_size=4, workers=0)
CONDITION = ConditionConfig()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    run_prepare(TINY_DATA, out_dir=root / "data", cache_dir=root / "cache", progress=False)
    return root


@pytest.fixture(scope="session")
def vae_file(dataset):
    cfg = VAEConfig(base_channels=8, channel_mults=(1, 2, 4), data=DATA, train=LOOP)
    logged = []
    result = train_vae(cfg, dataset_dir=dataset / "data", work_dir=dataset / "work",
                       log=lambda m, s: logged.append((s, m)), progress=False)
    assert {"test_nmse", "test_ssim", "scale_factor"} <= set(result.metrics)
    assert any("train/loss" in m for _, m in logged) and any("val/nmse" in m for _, m in logged)
    path = dataset / "models" / "vae.pt"
    save_vae(path, result.model, cfg, scale_factor=result.scale_factor)
    return path, result


@pytest.fixture(scope="session")
def ldm_file(dataset, vae_file):
    vae_path, _ = vae_file
    cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(num_steps=50), sample_steps=2, data=DATA, train=LOOP)
    result = train_ldm(cfg, CONDITION, dataset_dir=dataset / "data", vae_path=vae_path, work_dir=dataset / "work",
                       log=lambda m, s: None, progress=False)
    path = dataset / "models" / "ldm.pt"
    save_ldm(path, result.model.unet, cfg, CONDITION, vae_path)
    return path, cfg, result


def _toy_ldm_on(objective: str, dataset, vae_path):
    """The toy denoiser of `ldm_file` trained on another objective, saved as models/ldm_{objective}.pt."""
    from radiodiff.options import Prediction

    cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(num_steps=50, prediction=Prediction(objective)), sample_steps=2,
                    data=DATA, train=LOOP)
    result = train_ldm(cfg, CONDITION, dataset_dir=dataset / "data", vae_path=vae_path, work_dir=dataset / "work",
                       log=lambda m, s: None, progress=False)
    path = dataset / "models" / f"ldm_{objective}.pt"
    save_ldm(path, result.model.unet, cfg, CONDITION, vae_path)
    return path, cfg, result


@pytest.fixture(scope="session")
def kc_ldm_file(dataset, vae_file):
    """The toy denoiser on RadioDiff's decoupled (kc) objective, two heads."""
    return _toy_ldm_on("kc", dataset, vae_file[0])


@pytest.fixture(scope="session")
def flow_ldm_file(dataset, vae_file):
    """The toy denoiser on rectified flow matching, one velocity head."""
    return _toy_ldm_on("flow", dataset, vae_file[0])


def randomised(module, seed: int):
    """`module` with every parameter drawn from N(0, 0.1^2) by a seeded generator, in eval mode:
    a fresh UNet's output layer is zero, and random weights make every sampler step matter."""
    import torch

    from radiodiff.training.rng import seeded_generator

    generator = seeded_generator(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return module.eval()
