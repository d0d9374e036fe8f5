"""RadioDiff-Flux on the decoupled (kc) objective: continuous-time plans, the split sampler
against the whole one, the tail path, and bank keys on t_mid in (0, 1]."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from radiodiff.artifacts.denoiser import load_ldm
from radiodiff.diffusion.continuous import decoupled_times
from radiodiff.diffusion.decoupled import DecoupledProcess, decoupled_step
from radiodiff.diffusion.sampling import sample_loop
from radiodiff.flux import flux_plan, full_plan, sampler_hash, stage1_midpoint, stage2_decode, stage2_latent
from radiodiff.generation import generate, initial_noise
from radiodiff.options import Preconditioning
from radiodiff.training.rng import seeded_generator

PROCESS = DecoupledProcess(num_train_steps=1000)


@pytest.fixture(scope="module")
def kc(dataset, vae_file, kc_ldm_file):
    model, _, condition = load_ldm(kc_ldm_file[0], vae_file[0])
    cond = torch.rand(3, condition.channels, 32, 32, generator=seeded_generator(5))
    cond[:, 0] = (cond[:, 0] > 0.7).float()
    return model, cond


def test_continuous_plan_splits_one_uniform_grid():
    plan = flux_plan(PROCESS, 600, 2, 3)
    assert plan.prefix == pytest.approx((1.0, 0.8, 0.6)) and plan.prefix[-1] == 0.6 == plan.t_mid
    assert plan.tail[0] == 0.6 and plan.tail[-1] == 0.0 and len(plan.tail) == 4
    assert (plan.prefix_calls, plan.tail_calls) == (2, 3)
    assert flux_plan(PROCESS, 999, 0, 5).tail == full_plan(PROCESS, 5).tail == decoupled_times(5)  # the whole sampler
    for bad in [(0, 2, 1), (1000, 2, 1), (600, 0, 1), (999, 2, 1), (600, 2, 0)]:
        with pytest.raises(ValueError):
            flux_plan(PROCESS, *bad)


def test_config_t_mid_in_steps_of_T_maps_to_continuous_time():
    assert PROCESS.config_time(600) == 0.6 and PROCESS.config_time(999) == 1.0
    assert DecoupledProcess(num_train_steps=50).config_time(30) == 0.6


def test_whole_plan_is_generate_bit_for_bit(kc):
    model, cond = kc
    expected = generate(model, cond, steps=3, generator=seeded_generator(7))
    start = initial_noise(model.latent_shape(cond), seeded_generator(7))
    assert torch.equal(stage2_decode(model, start, cond, full_plan(model.process, 3)), expected)


def test_prefix_then_tail_equals_one_trajectory(kc):
    model, cond = kc
    start = initial_noise(model.latent_shape(cond), seeded_generator(3))
    plan = flux_plan(model.process, 30, 2, 3)  # t_mid 0.6 of T = 50
    split = stage2_latent(model, stage1_midpoint(model, cond, plan, start), cond, plan)
    whole = sample_loop(model.process, model.denoise_fn(cond), start, decoupled_times(5))
    assert torch.allclose(split, whole, atol=1e-5)
    assert not torch.allclose(split, start, atol=1e-2)  # the network did something


def test_tail_path_runs_from_the_midpoint_to_the_data_and_the_sampler_follows_it():
    generator = seeded_generator(11)
    x0, z_mid = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    t_mid = torch.tensor([0.6, 0.2])
    n_hat = PROCESS.implied_noise(z_mid, x0, t_mid)
    assert torch.allclose(PROCESS.add_noise(x0, n_hat, t_mid), z_mid, atol=1e-6)
    assert torch.allclose(PROCESS.add_noise(x0, n_hat, torch.zeros(2)), x0, atol=1e-6)
    # heads equal to the path's targets (C = -x0, n = n_hat): one deterministic step lands on x0
    for i, t in enumerate(t_mid.tolist()):
        out = decoupled_step(-x0[i:i + 1], n_hat[i:i + 1], z_mid[i:i + 1], t, 0.0, eta=0.0)
        assert torch.allclose(out.prev_sample, x0[i:i + 1], atol=1e-5)


def test_sampler_hash_and_plans_follow_the_kind_of_time(kc, vae_file, ldm_file):
    model, cond = kc
    plan = flux_plan(model.process, 30, 2, 1)
    assert plan.t_mid == 0.6  # T = 50
    other = dataclasses.replace(model.process, preconditioning=Preconditioning.RADIODIFF)
    assert sampler_hash(model.process, plan) != sampler_hash(other, plan)
    assert sampler_hash(model.process, plan) != sampler_hash(model.process, flux_plan(model.process, 30, 3, 1))
    discrete, _, _ = load_ldm(ldm_file[0], vae_file[0])
    discrete_plan = flux_plan(discrete.process, 30, 2, 1)
    assert discrete_plan.t_mid == 30 and discrete_plan.tail == (30, -1)
    with pytest.raises(ValueError, match="times must"):  # a plan of another kind of time
        stage1_midpoint(model, cond, discrete_plan, torch.zeros(model.latent_shape(cond)))
