"""Training stages at toy width on a tiny real dataset: they train, measure, save and reload."""

from __future__ import annotations

import pytest
import torch

from radiodiff.config import (
    BaselineConfig, ConditionConfig, DataLoaderConfig, DiffusionConfig, LDMConfig, PrepareConfig, SplitSizes,
    UNetConfig, VAEConfig,
)
from radiodiff.data.prepare import run_prepare
from radiodiff.errors import UserError
from radiodiff.generation import generate
from radiodiff.stages.baseline import load_baseline, predict_baseline, save_baseline, train_baseline
from radiodiff.stages.ldm import load_ldm, save_ldm, train_ldm
from radiodiff.stages.vae import load_vae, save_vae, train_vae
from radiodiff.training.config import LoopConfig, OptimConfig

TINY_DATA = PrepareConfig(maps=SplitSizes(train=3, val=1, test=1), tx_per_map=4, resolution=32, workers=1)
LOOP = LoopConfig(total_steps=4, log_every=2, val_every=4, checkpoint_every=2,
                  optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, ema_start_step=0, ema_decay=0.5))
DATA = DataLoaderConfig(batch_size=4, workers=0)
CONDITION = ConditionConfig()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    run_prepare(TINY_DATA, out_dir=root / "data", cache_dir=root / "cache", progress=False)
    return root


@pytest.fixture(scope="module")
def vae_file(dataset):
    cfg = VAEConfig(base_channels=8, channel_mults=(1, 2, 4), data=DATA, train=LOOP)
    logged = []
    result = train_vae(cfg, dataset_dir=dataset / "data", work_dir=dataset / "work",
                       log=lambda m, s: logged.append((s, m)), progress=False)
    assert {"test_nmse", "test_ssim", "scale_factor"} <= set(result.metrics)
    assert any("train/loss" in m for _, m in logged) and any("val/nmse" in m for _, m in logged)
    path = dataset / "models" / "vae.pt"
    save_vae(path, result, cfg)
    return path, result


def test_vae_file_round_trip(vae_file):
    path, result = vae_file
    model, scale = load_vae(path)
    assert scale == pytest.approx(result.scale_factor)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode(x).mode(), result.model.encode(x).mode())


@pytest.fixture(scope="module")
def ldm_file(dataset, vae_file):
    vae_path, _ = vae_file
    cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(num_steps=50), sample_steps=2, data=DATA, train=LOOP)
    result = train_ldm(cfg, CONDITION, dataset_dir=dataset / "data", vae_path=vae_path, work_dir=dataset / "work",
                       log=lambda m, s: None, progress=False)
    path = dataset / "models" / "ldm.pt"
    save_ldm(path, result, cfg, CONDITION, vae_path)
    return path, cfg, result


def test_ldm_trains_samples_and_reloads(vae_file, ldm_file):
    vae_path, _ = vae_file
    path, cfg, result = ldm_file
    assert {"test_nmse", "test_tx_response", "test_static_nmse"} <= set(result.metrics)
    model, loaded_cfg, condition = load_ldm(path, vae_path)
    assert loaded_cfg == cfg and condition == CONDITION
    cond = torch.rand(2, CONDITION.channels, 32, 32)
    first = generate(model, cond, steps=2, generator=torch.Generator().manual_seed(3))
    again = generate(result.model, cond, steps=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and first.shape == (2, 1, 32, 32)


def test_ldm_refuses_a_foreign_vae(vae_file, ldm_file, tmp_path):
    _, result = vae_file
    other = tmp_path / "other_vae.pt"
    save_vae(other, result.__class__(result.model, result.scale_factor * 2, result.metrics, None),
             VAEConfig(base_channels=8, channel_mults=(1, 2, 4), data=DATA, train=LOOP))
    with pytest.raises(UserError, match="another VAE"):
        load_ldm(ldm_file[0], other)


def test_baseline_trains_and_reloads(dataset):
    cfg = BaselineConfig(base_channels=8, channel_mults=(1, 2), data=DATA, train=LOOP)
    result = train_baseline(cfg, CONDITION, dataset_dir=dataset / "data", work_dir=dataset / "work",
                            log=lambda m, s: None, progress=False)
    assert 0 <= result.metrics["test_nmse"] and "test_tx_response" in result.metrics
    path = dataset / "models" / "baseline.pt"
    save_baseline(path, result, cfg, CONDITION)
    model, condition = load_baseline(path)
    cond = torch.rand(2, condition.channels, 32, 32)
    cond[:, 0] = (cond[:, 0] > 0.5).float()
    with torch.no_grad():
        pred = predict_baseline(model, cond)
    assert torch.all(pred[:, 0][cond[:, 0] > 0] == 0) and pred.min() >= 0 and pred.max() <= 1


def test_model_files_refuse_garbage(tmp_path):
    bad = tmp_path / "vae.pt"
    bad.write_bytes(b"definitely not a model")
    with pytest.raises(UserError, match="not a readable radiodiff model file"):
        load_vae(bad)
    with pytest.raises(UserError, match="model file not found"):
        load_vae(tmp_path / "missing.pt")


def test_resume_folder_changes_with_the_targets_not_only_the_index(dataset, tmp_path):
    import shutil

    import numpy as np

    from radiodiff.stages.common import dataset_digest

    copy = tmp_path / "data"
    shutil.copytree(dataset / "data", copy)
    before = dataset_digest(copy)
    gains = np.load(copy / "train_gain.npy")
    np.save(copy / "train_gain.npy", gains * 0.5)  # new targets, same index
    assert dataset_digest(copy) != before
