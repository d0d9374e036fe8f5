"""Two-stage Flux sampling: the split is exact, the plan is checked, the tail path is right."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from radiodiff.artifacts.denoiser import load_ldm
from radiodiff.diffusion.discrete import DiscreteProcess
from radiodiff.diffusion.prediction import prediction_target
from radiodiff.diffusion.sampling import sample_loop
from radiodiff.diffusion.schedule import make_schedule
from radiodiff.flux import (
    flux_plan, full_plan, sampler_hash, scene_noise, stage1_midpoint, stage2_decode, stage2_latent, static_condition,
)
from radiodiff.generation import LatentDiffusion, generate, initial_noise
from radiodiff.models.unet import ConditionalUNet
from radiodiff.models.vae import AutoencoderKL
from radiodiff.options import Prediction, SamplerKind, ScheduleKind
from radiodiff.training.rng import seeded_generator
from tests.conftest import randomised

T = 40


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    unet = randomised(ConditionalUNet(latent_channels=3, cond_channels=4, base_channels=8, channel_mults=(1, 2),
                                      num_res_blocks=1, cond_base_channels=4), 1)
    vae = AutoencoderKL(base_channels=8, channel_mults=(1, 2, 4), num_res_blocks=1).eval()
    return LatentDiffusion(unet, vae, DiscreteProcess(make_schedule(ScheduleKind.LINEAR, T), Prediction.V), 0.7)


@pytest.fixture(scope="module")
def cond():
    cond = torch.rand(3, 4, 32, 32)
    cond[:, 0] = (cond[:, 0] > 0.7).float()
    return cond


@pytest.mark.parametrize("sampler,steps", [(SamplerKind.DDIM, 7), (SamplerKind.DDIM, 1), (SamplerKind.DDPM, T)])
def test_t_mid_at_the_start_equals_the_full_sampler_bit_for_bit(model, cond, sampler, steps):
    model = model.with_process(dataclasses.replace(model.process, sampler=sampler))
    full = generate(model, cond, steps=steps, generator=seeded_generator(3))
    generator = seeded_generator(3)
    plan = flux_plan(model.process, T - 1, 0, steps)
    assert plan == full_plan(model.process, steps)
    midpoint = stage1_midpoint(model, cond, plan, initial_noise(model.latent_shape(cond), generator))
    two_stage = stage2_decode(model, midpoint, cond, plan, generator=generator)
    assert torch.equal(full, two_stage)


def test_prefix_then_tail_is_one_loop_over_the_joined_steps(model, cond):
    plan = flux_plan(model.process, 23, 3, 4)
    assert plan.prefix[0] == T - 1 and plan.prefix[-1] == 23 == plan.tail[0] and plan.tail[-2:] == (0, -1)
    assert (plan.prefix_calls, plan.tail_calls) == (3, 4)
    x_start = scene_noise((3, 8, 8), [5, 6, 7], seed=1)
    with torch.no_grad():
        latent = stage2_latent(model, stage1_midpoint(model, cond, plan, x_start), cond, plan)
    joined = sample_loop(model.process, model.denoise_fn(cond), x_start, plan.prefix[:-1] + plan.tail)
    assert torch.equal(latent, joined)


def test_static_prefix_differs_from_the_full_one_only_through_the_dynamic_channels(model, cond):
    mask = (False, True, True, True)
    static = static_condition(cond, mask)
    assert torch.equal(static[:, 0], cond[:, 0]) and static[:, 1:].abs().sum() == 0
    plan = flux_plan(model.process, 20, 2, 1)
    x_start = scene_noise((3, 8, 8), [1, 2, 3], seed=0)
    assert not torch.equal(stage1_midpoint(model, static, plan, x_start), stage1_midpoint(model, cond, plan, x_start))


def test_scene_noise_depends_on_scene_and_seed_not_on_the_batch():
    alone = scene_noise((3, 4, 4), [9], seed=2)
    batch = scene_noise((3, 4, 4), [1, 9], seed=2)
    assert torch.equal(alone[0], batch[1])
    assert not torch.equal(scene_noise((3, 4, 4), [9], seed=3), alone)


@pytest.mark.parametrize("args", [(T, 0, 1), (10, 0, 2), (T - 1, 2, 2), (10, 2, 12), (10, 2, 0), (-1, 2, 1)])
def test_impossible_plans_are_refused(model, args):
    with pytest.raises(ValueError):
        flux_plan(model.process, *args)


def test_sampler_hash_keys_the_prefix_not_the_tail(model):
    process = model.process
    base = sampler_hash(process, flux_plan(process, 20, 3, 1))
    assert base == sampler_hash(process, flux_plan(process, 20, 3, 5))
    assert base != sampler_hash(process, flux_plan(process, 20, 4, 1))
    ddpm = dataclasses.replace(process, sampler=SamplerKind.DDPM)
    assert base != sampler_hash(ddpm, flux_plan(ddpm, 20, 3, 1))
    eps = DiscreteProcess(process.schedule, Prediction.EPS)
    assert base != sampler_hash(eps, flux_plan(eps, 20, 3, 1))
    noisy = dataclasses.replace(process, eta=0.5)
    assert base != sampler_hash(noisy, flux_plan(noisy, 20, 3, 1))


def test_tail_path_starts_at_the_midpoint_and_an_oracle_tail_lands_on_x0(model):
    generator = seeded_generator(4)
    x0, z_mid = torch.randn(2, 3, 8, 8, generator=generator), torch.randn(2, 3, 8, 8, generator=generator)
    t_mid = torch.tensor([25, 25])
    process = model.process
    eps_hat = process.implied_noise(z_mid, x0, t_mid)
    assert torch.allclose(process.add_noise(x0, eps_hat, t_mid), z_mid, atol=1e-6)
    for tail in (1, 3):
        plan = flux_plan(process, 25, 2, tail)
        oracle = lambda x, t: prediction_target(x0, eps_hat, t, process.schedule, process.prediction)  # noqa: E731
        landed = stage2_latent(model, z_mid, torch.zeros(2, 4, 32, 32), plan, denoise_fn=oracle)
        assert torch.allclose(landed, x0, atol=1e-5)


def test_a_trajectory_encodes_its_condition_once_and_samples_as_the_plain_network(dataset, vae_file, ldm_file):
    model, _, condition = load_ldm(ldm_file[0], vae_file[0])
    model = dataclasses.replace(model, unet=randomised(copy.deepcopy(model.unet), seed=11))
    cond = torch.rand(3, condition.channels, 32, 32, generator=torch.Generator().manual_seed(0))
    encodings = []
    hook = model.unet.cond_encoder.register_forward_hook(lambda module, args, out: encodings.append(1))
    try:
        cached = generate(model, cond, steps=5, generator=seeded_generator(4))
    finally:
        hook.remove()
    generator = seeded_generator(4)
    x_start = initial_noise(model.latent_shape(cond), generator)
    with torch.no_grad():
        latent = sample_loop(model.process, lambda x_t, t: model.unet(x_t, t, cond).float(), x_start,
                             model.process.timesteps(5), generator=generator)
        plain = model.decode(latent, cond[:, 0])
    assert len(encodings) == 1 and torch.equal(cached, plain)
    with pytest.raises(ValueError, match="do not match"):
        model.unet.denoise(torch.zeros(2, 3, 8, 8), 3, model.unet.encode_condition(cond))
