"""RadioDiff-Flux on the decoupled (kc) objective: continuous-time plans, the split sampler
against the whole one, the tail path, and bank keys on t_mid in (0, 1]."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from radiodiff.diffusion.decoupled import Preconditioning, decoupled_loop, decoupled_step, decoupled_times
from radiodiff.flux import (
    continuous_time, decoupled_flux_plan, flux_plan, full_plan, model_flux_plan, sampler_hash, stage1_midpoint,
    stage2_decode, stage2_latent,
)
from radiodiff.generation import generate, initial_noise
from radiodiff.stages.ldm import load_ldm
from radiodiff.stages.tail import decoupled_path_point
from radiodiff.training.rng import seeded_generator


@pytest.fixture(scope="module")
def kc(dataset, vae_file, kc_ldm_file):
    model, _, condition = load_ldm(kc_ldm_file[0], vae_file[0])
    cond = torch.rand(3, condition.channels, 32, 32, generator=seeded_generator(5))
    cond[:, 0] = (cond[:, 0] > 0.7).float()
    return model, cond


def test_continuous_plan_splits_one_uniform_grid():
    plan = decoupled_flux_plan(0.6, 2, 3)
    assert plan.continuous and plan.prefix == pytest.approx((1.0, 0.8, 0.6)) and plan.prefix[-1] == 0.6
    assert plan.tail[0] == 0.6 and plan.tail[-1] == 0.0 and len(plan.tail) == 4
    assert (plan.prefix_calls, plan.tail_calls) == (2, 3)
    assert decoupled_flux_plan(1.0, 0, 5).tail == decoupled_times(5)  # the whole sampler
    for bad in [(0.0, 2, 1), (1.2, 2, 1), (0.6, 0, 1), (1.0, 2, 1), (0.6, 2, 0)]:
        with pytest.raises(ValueError):
            decoupled_flux_plan(*bad)


def test_config_t_mid_in_steps_of_T_maps_to_continuous_time():
    assert continuous_time(600, 1000) == 0.6 and continuous_time(999, 1000) == 1.0 and continuous_time(30, 50) == 0.6


def test_whole_plan_is_generate_bit_for_bit(kc):
    model, cond = kc
    expected = generate(model, cond, steps=3, generator=seeded_generator(7))
    start = initial_noise(model.latent_shape(cond), seeded_generator(7))
    assert torch.equal(stage2_decode(model, start, cond, full_plan(model, 3)), expected)


def test_prefix_then_tail_equals_one_trajectory(kc):
    model, cond = kc
    start = initial_noise(model.latent_shape(cond), seeded_generator(3))
    plan = decoupled_flux_plan(0.6, 2, 3)
    split = stage2_latent(model, stage1_midpoint(model, cond, plan, start), cond, plan)
    with torch.no_grad():
        whole = decoupled_loop(model.denoise_fn(cond), start, decoupled_times(5), eta=0.0,
                               preconditioning=model.preconditioning)
    assert torch.allclose(split, whole, atol=1e-5)
    assert not torch.allclose(split, start, atol=1e-2)  # the network did something


def test_tail_path_runs_from_the_midpoint_to_the_data_and_the_sampler_follows_it():
    generator = seeded_generator(11)
    x0, z_mid = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    t_mid = torch.tensor([0.6, 0.2])
    at_mid, n_hat = decoupled_path_point(z_mid, x0, t_mid, t_mid)
    assert torch.allclose(at_mid, z_mid, atol=1e-6)
    assert torch.allclose(decoupled_path_point(z_mid, x0, t_mid, torch.zeros(2))[0], x0, atol=1e-6)
    # heads equal to the path's targets (C = -x0, n = n_hat): one deterministic step lands on x0
    for i, t in enumerate(t_mid.tolist()):
        out = decoupled_step(-x0[i:i + 1], n_hat[i:i + 1], z_mid[i:i + 1], t, 0.0, eta=0.0)
        assert torch.allclose(out.prev_sample, x0[i:i + 1], atol=1e-5)


def test_sampler_hash_and_plans_follow_the_kind_of_time(kc, vae_file, ldm_file):
    model, cond = kc
    plan = model_flux_plan(model, 30, 2, 1)
    assert plan.continuous and plan.t_mid == 0.6  # T = 50
    other = dataclasses.replace(model, preconditioning=Preconditioning.RADIODIFF)
    assert sampler_hash(model, plan) != sampler_hash(other, plan)
    assert sampler_hash(model, plan) != sampler_hash(model, model_flux_plan(model, 30, 3, 1))
    with pytest.raises(ValueError, match="continuous-time plan"):
        stage1_midpoint(model, cond, flux_plan(50, 30, 2, 1), torch.zeros(model.latent_shape(cond)))
    discrete, _, _ = load_ldm(ldm_file[0], vae_file[0])
    assert not model_flux_plan(discrete, 30, 2, 1).continuous
