"""On a CUDA device: every stage trains there, checkpoints move between GPU and CPU, GPU maps
agree with CPU maps, and `predict --device cuda` writes what the CPU writes.

Run with `pytest -m cuda` on a GPU machine; every test here is skipped without CUDA (and the
suite never depends on one). They need no MLflow, Prefect, DVC or Optuna.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import CONDITION, DATA, LOOP
from radiodiff.config import DiffusionConfig, LDMConfig, UNetConfig, VAEConfig
from radiodiff.options import Precision

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# fp32 without TF32 on both sides: the GPU's convolutions still sum in another order.
MAP_TOLERANCE = 1e-3  # max |gain difference| of a GPU map from the CPU map, gain in [0, 1]


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _on_cuda(loop):
    import dataclasses

    return dataclasses.replace(loop, device="cuda", precision=Precision.BF16)


def test_every_training_stage_runs_on_the_gpu(dataset, vae_file, monkeypatch):
    """train_vae, train_ldm (v and kc), train_baseline and tune_tail's loop put their networks on
    cuda and report the GPU's name."""
    from radiodiff.artifacts.vae import save_vae
    from radiodiff.config import BaselineConfig
    from radiodiff.stages.baseline import train_baseline
    from radiodiff.stages.ldm import train_ldm
    from radiodiff.stages.vae import train_vae
    from radiodiff.options import Prediction

    monkeypatch.delenv("RADIODIFF_DEVICE", raising=False)
    name = torch.cuda.get_device_name(0)
    vae_cfg = VAEConfig(base_channels=8, channel_mults=(1, 2, 4), data=DATA, train=_on_cuda(LOOP))
    vae = train_vae(vae_cfg, dataset_dir=dataset / "data", work_dir=dataset / "cuda", log=lambda m, s: None,
                    progress=False)
    assert next(vae.model.parameters()).device.type == "cuda" and vae.metrics["device"] == name
    vae_path = dataset / "cuda" / "vae.pt"
    save_vae(vae_path, vae.model, vae_cfg, scale_factor=vae.scale_factor)
    for prediction in (Prediction.V, Prediction.KC):
        cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                        diffusion=DiffusionConfig(num_steps=50, prediction=prediction), sample_steps=2, data=DATA,
                        train=_on_cuda(LOOP))
        result = train_ldm(cfg, CONDITION, dataset_dir=dataset / "data", vae_path=vae_path, work_dir=dataset / "cuda",
                           log=lambda m, s: None, progress=False)
        assert result.model.device.type == "cuda" and np.isfinite(result.metrics["test_nmse"])
    baseline = train_baseline(BaselineConfig(base_channels=8, channel_mults=(1, 2), data=DATA, train=_on_cuda(LOOP)),
                              CONDITION, dataset_dir=dataset / "data", work_dir=dataset / "cuda",
                              log=lambda m, s: None, progress=False)
    assert next(baseline.model.parameters()).device.type == "cuda" and baseline.metrics["device"] == name


@pytest.mark.parametrize(("first", "second"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_resumes_on_the_other_device(tmp_path, first, second):
    from radiodiff.training.batching import loader_factory
    from radiodiff.training.config import LoopConfig, OptimConfig
    from radiodiff.training.loop import train_loop

    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    optim = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=1, ema_start_step=0, ema_decay=0.5)
    loss = lambda model, batch, step, generator: (F.mse_loss(model(batch[0]), batch[1]), {})  # noqa: E731
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1))
    for device, steps in ((first, 3), (second, 6)):
        placed = copy.deepcopy(model).to(device)
        config = LoopConfig(total_steps=steps, checkpoint_every=3, log_every=3, val_every=3, optim=optim,
                            device=device, precision=Precision.FP32)
        result = train_loop(model=placed, loss_fn=loss, batches=loader_factory(data, batch_size=8, seed=0),
                            config=config, log=lambda m, s: None, progress=False, checkpoint_dir=tmp_path)
    assert result.step == 6 and next(placed.parameters()).device.type == torch.device(second).type
    assert all(torch.isfinite(p).all() for p in placed.parameters())


def test_fp16_training_checkpoints_its_loss_scale(tmp_path):
    from radiodiff.training.batching import loader_factory
    from radiodiff.training.checkpoint import latest_checkpoint, read_payload
    from radiodiff.training.config import LoopConfig, OptimConfig
    from radiodiff.training.loop import train_loop

    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    model = torch.nn.Linear(4, 1).cuda()
    config = LoopConfig(total_steps=3, checkpoint_every=3, optim=OptimConfig(lr=1e-2, min_lr=1e-3),
                        device="cuda", precision=Precision.FP16)
    train_loop(model=model, loss_fn=lambda m, b, s, g: (F.mse_loss(m(b[0]).float(), b[1]), {}),
               batches=loader_factory(data, batch_size=8, seed=0), config=config, log=lambda m, s: None,
               progress=False, checkpoint_dir=tmp_path)
    scaler = read_payload(latest_checkpoint(tmp_path))["loop_state"]["grad_scaler"]
    assert scaler and scaler["scale"] > 0


def test_gpu_maps_agree_with_cpu_maps(ldm_file, vae_file):
    """The same files, the same seeded CPU start noise: maps within MAP_TOLERANCE of each other."""
    from radiodiff.artifacts.denoiser import load_ldm
    from radiodiff.flux import flux_plan, scene_noise, stage1_midpoint, stage2_decode, static_conditions
    from radiodiff.generation import generate
    from radiodiff.training.rng import seeded_generator

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    ldm_path, _, _ = ldm_file
    vae_path, _ = vae_file
    maps = {}
    for device in ("cpu", "cuda"):
        model, _, condition = load_ldm(ldm_path, vae_path, device)
        rng = np.random.default_rng(0)
        cond = static_conditions(rng.random((3, 32, 32)) > 0.7, condition.channels)
        plan = flux_plan(model.process, 30, 2, 2)
        midpoint = stage1_midpoint(model, cond, plan, scene_noise(model.latent_shape(cond)[1:], [1, 2, 3], 0))
        maps[device] = (stage2_decode(model, midpoint, cond, plan).cpu(),
                        generate(model, cond, steps=3, generator=seeded_generator(5)).cpu())
    for cpu_map, gpu_map in zip(maps["cpu"], maps["cuda"]):
        assert (cpu_map - gpu_map).abs().max() <= MAP_TOLERANCE


def test_predict_on_cuda_writes_the_cpu_shape(ldm_file, vae_file, tmp_path, capsys):
    import shutil

    import yaml
    from PIL import Image

    from radiodiff.cli import main

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ldm_file[0], models / "ldm.pt")
    shutil.copy(vae_file[0], models / "vae.pt")
    params = {"prepare": {"resolution": 32},
              "flux": {"t_mids": [30], "t_mid": 30, "prefix_steps": 2, "tail_steps": 2, "seeds": [0]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    buildings = np.zeros((256, 256), dtype=np.uint8)
    buildings[40:90, 40:90] = 255
    Image.fromarray(buildings).save(tmp_path / "b.png")
    shapes = []
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.png"
        assert main(["predict", "--buildings", str(tmp_path / "b.png"), "--tx", "10", "10", "--out", str(out),
                     "--models", str(models), "--params", str(tmp_path / "params.yaml"), "--device", device]) == 0
        shapes.append(np.asarray(Image.open(out)).shape)
    assert shapes[0] == shapes[1] == (32, 32)
    assert "on cuda:0)" in capsys.readouterr().out


def test_tf32_is_a_switch_not_a_default(tmp_path):
    from radiodiff.training.batching import loader_factory
    from radiodiff.training.config import LoopConfig, OptimConfig
    from radiodiff.training.loop import train_loop

    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    torch.backends.cuda.matmul.allow_tf32 = False
    for tf32 in (False, True):
        config = LoopConfig(total_steps=2, optim=OptimConfig(lr=1e-2, min_lr=1e-3), device="cuda", tf32=tf32)
        train_loop(model=torch.nn.Linear(4, 1).cuda(), loss_fn=lambda m, b, s, g: (F.mse_loss(m(b[0]), b[1]), {}),
                   batches=loader_factory(data, batch_size=8, seed=0), config=config, log=lambda m, s: None,
                   progress=False)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
