"""Training stages at toy width on a tiny real dataset: they train, measure, save and reload."""

from __future__ import annotations

import pytest
import torch

from radiodiff.config import (
    BaselineConfig,
    DiffusionConfig,
    LDMConfig,
    UNetConfig,
    VAEConfig,
)
from radiodiff.artifacts.baseline import load_baseline, save_baseline
from radiodiff.artifacts.denoiser import load_ldm, save_ldm
from radiodiff.artifacts.vae import load_vae, save_vae
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.errors import UserError
from radiodiff.generation import generate
from radiodiff.options import Prediction
from radiodiff.stages.baseline import predict_baseline, train_baseline
from radiodiff.stages.ldm import train_ldm
from radiodiff.training.rng import seeded_generator
from tests.conftest import CONDITION, DATA, LOOP


def test_vae_file_round_trip(vae_file):
    path, result = vae_file
    model, scale = load_vae(path)
    assert scale == pytest.approx(result.scale_factor)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode(x).mode(), result.model.encode(x).mode())


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
    save_vae(other, result.model, VAEConfig(base_channels=8, channel_mults=(1, 2, 4), data=DATA, train=LOOP),
             scale_factor=result.scale_factor * 2)
    with pytest.raises(UserError, match="another VAE"):
        load_ldm(ldm_file[0], other)


def test_baseline_trains_and_reloads(dataset):
    cfg = BaselineConfig(base_channels=8, channel_mults=(1, 2), data=DATA, train=LOOP)
    result = train_baseline(cfg, CONDITION, dataset_dir=dataset / "data", work_dir=dataset / "work",
                            log=lambda m, s: None, progress=False)
    assert 0 <= result.metrics["test_nmse"] and "test_tx_response" in result.metrics
    path = dataset / "models" / "baseline.pt"
    save_baseline(path, result.model, cfg, CONDITION)
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


def test_ldm_trains_and_samples_with_the_decoupled_objective(dataset, vae_file, tmp_path):
    vae_path, _ = vae_file
    cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(prediction=Prediction.KC), sample_steps=2, data=DATA, train=LOOP)
    result = train_ldm(cfg, CONDITION, dataset_dir=dataset / "data", vae_path=vae_path, work_dir=tmp_path,
                       log=lambda m, s: None, progress=False)
    assert 0.0 <= result.metrics["test_nmse"] < 10 and result.model.unet.out_channels == 6
    save_ldm(tmp_path / "ldm.pt", result.model.unet, cfg, CONDITION, vae_path)
    model, loaded, _ = load_ldm(tmp_path / "ldm.pt", vae_path)
    assert loaded.diffusion.prediction is Prediction.KC and model.unet.time_scale == 1000.0
    cond = RadioMapDataset(dataset / "data", "test", CONDITION.encodings)[0]["cond"][None]
    first = generate(model, cond, steps=3, generator=seeded_generator(0))
    assert torch.equal(first, generate(model, cond, steps=3, generator=seeded_generator(0)))  # eta 0: seeded
    assert first.shape == (1, 1, 32, 32) and 0 <= float(first.min()) and float(first.max()) <= 1
