"""tune_few_step, the control of the Flux tail's fine-tuning: a copy of each objective's
denoiser trained with the tail's settings on its own one-step sampler, and its evaluate row."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from radiodiff.artifacts.denoiser import load_few_step, load_ldm, load_tail, save_few_step, save_tail
from radiodiff.config import FluxConfig, TailTuneConfig
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.errors import UserError
from radiodiff.evaluation.methods import Toolkit, from_noise, tuned_few_step
from radiodiff.stages.evaluate import select_maps
from radiodiff.stages.few_step import _decoded_loss_fn, _loss_fn, train_few_step
from radiodiff.stages.latents import LatentDataset, encode_dataset
from radiodiff.training.rng import seeded_generator
from tests.conftest import CONDITION, LOOP, randomised
from tests.test_flux_stages import EVALUATE

FLUX = FluxConfig(t_mids=(30,), t_mid=30, prefix_steps=2, tail_steps=1, seeds=(0,),
                  tail_tune=TailTuneConfig(batch_size=4, train=LOOP))


@pytest.mark.parametrize("fixture", ["ldm_file", "kc_ldm_file", "flow_ldm_file"])
def test_each_objective_tunes_its_one_step_sampler_and_saves_a_copy_tied_to_it(fixture, request, dataset, vae_file,
                                                                               tmp_path):
    ldm_path = request.getfixturevalue(fixture)[0]
    model, _, _ = load_ldm(ldm_path, vae_file[0])
    result = train_few_step(model, FLUX, CONDITION, ldm_path=ldm_path, dataset_dir=dataset / "data",
                            work_dir=tmp_path, log=lambda m, s: None, progress=False)
    name = f"{model.process.name}_1_nmse"
    assert result.step == LOOP.total_steps and np.isfinite(result.val_metrics[name]) and np.isfinite(result.train_loss)
    path = tmp_path / "few_step.pt"
    save_few_step(path, result.ema.ema_model, FLUX, ldm_path)
    tuned = load_few_step(path, ldm_path, model)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), model.unet.state_dict().values()))
    foreign = tmp_path / "other_ldm.pt"
    foreign.write_bytes(ldm_path.read_bytes() + b"\0")
    with pytest.raises(UserError, match="another denoiser"):
        load_few_step(path, foreign, model)
    with pytest.raises(UserError, match="not a radiodiff flux_tail model file"):
        load_tail(path, ldm_path, model)  # a few-step copy is not a Flux tail, nor the reverse
    save_tail(tmp_path / "tail.pt", result.ema.ema_model, FLUX, ldm_path)
    with pytest.raises(UserError, match="not a radiodiff few_step model file"):
        load_few_step(tmp_path / "tail.pt", ldm_path, model)


@pytest.mark.parametrize("fixture", ["ldm_file", "flow_ldm_file"])
def test_the_loss_sees_pure_noise_at_the_sampler_start_for_half_the_batch(fixture, request, dataset, vae_file):
    ldm_path = request.getfixturevalue(fixture)[0]
    model, _, _ = load_ldm(ldm_path, vae_file[0])
    train = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    latents = LatentDataset(train, encode_dataset(model, train))
    batch = torch.utils.data.default_collate([latents[i] for i in range(len(latents))] * 8)
    seen = {}

    def recording(x_t, t, cond):
        seen["t"] = t
        return model.unet(x_t, t, cond)

    loss, _ = _loss_fn(model)(recording, batch, 0, seeded_generator(0))
    start = torch.as_tensor(model.process.start_time, dtype=seen["t"].dtype)
    at_start = (seen["t"] == start).float().mean()
    assert torch.isfinite(loss) and 0.3 < at_start < 0.7  # half at t = T, the rest earlier on the path
    assert (seen["t"] <= start).all()


def test_the_tuned_row_is_the_one_step_sampler_run_by_the_tuned_copy(dataset, vae_file, ldm_file):
    ldm_path = ldm_file[0]
    model, _, _ = load_ldm(ldm_path, vae_file[0])
    maps = select_maps(RadioMapDataset(dataset / "data", "test", CONDITION.encodings), EVALUATE)
    kit = Toolkit(model, maps, FLUX, ldm_path, dataset / "bank", None, frozenset(), CONDITION.encodings,
                  few_step=copy.deepcopy(model.unet))
    rows = list(range(len(maps.maps)))
    plain, same = from_noise(kit, model, 1, family="ddim"), tuned_few_step(kit, 1)
    assert same.name == "ddim_1_tuned" and same.family == "few_step_tuned" and same.unet_calls == 1
    # the same weights: bit for bit the plain one-step sampler (same start noise, same plan)
    assert torch.equal(same.run(0, rows), plain.run(0, rows))
    other = tuned_few_step(Toolkit(**{**kit.__dict__, "few_step": randomised(copy.deepcopy(model.unet), 3)}), 1)
    assert not torch.equal(other.run(0, rows), plain.run(0, rows))


def test_evaluate_names_the_stage_when_a_tuned_copy_is_missing(tmp_path):
    from pipelines.evaluate import _few_step_file
    from radiodiff.artifacts.layout import ModelFiles

    with pytest.raises(UserError, match=r"few_step/flow.pt \(run `dvc repro tune_few_step`\)"):
        _few_step_file(ModelFiles(tmp_path / "models"), "flow")


@pytest.mark.parametrize("fixture", ["ldm_file", "flow_ldm_file"])
def test_the_decoded_loss_runs_the_one_step_sampler_from_pure_noise(fixture, request, dataset, vae_file):
    ldm_path = request.getfixturevalue(fixture)[0]
    model, _, _ = load_ldm(ldm_path, vae_file[0])
    net = randomised(copy.deepcopy(model.unet), seed=5)
    train = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    latents = LatentDataset(train, encode_dataset(model, train))
    batch = torch.utils.data.default_collate([latents[i] for i in range(4)])
    seen = []

    def recording(x_t, t, cond):
        seen.append(torch.as_tensor(t))
        return net(x_t, t, cond)

    loss, _ = _decoded_loss_fn(model, 1)(recording, batch, 0, seeded_generator(0))
    loss.backward()
    start = torch.as_tensor(model.process.start_time, dtype=seen[0].dtype)
    assert torch.isfinite(loss) and len(seen) == 1 and (seen[0] == start).all()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(p.grad is None for p in model.vae.parameters())


def test_the_control_adds_its_path_loss_with_the_tails_weight(dataset, vae_file, ldm_file):
    model, _, _ = load_ldm(ldm_file[0], vae_file[0])
    train = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    latents = LatentDataset(train, encode_dataset(model, train))
    batch = torch.utils.data.default_collate([latents[i] for i in range(4)])
    loss, parts = _decoded_loss_fn(model, 1, path_loss_weight=0.25)(model.unet, batch, 0, seeded_generator(0))
    assert float(loss.detach()) == pytest.approx(parts["decoded_loss"] + 0.25 * parts["path_loss"], rel=1e-5)
