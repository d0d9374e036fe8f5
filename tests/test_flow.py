"""Flow matching (rectified flow): the forward path, the Euler step, oracle exactness, the
Flux split on it, its bank key, and a trained toy model that learns something."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from radiodiff.artifacts.denoiser import build_unet
from radiodiff.config import DiffusionConfig, LDMConfig, UNetConfig
from radiodiff.diffusion import (
    DecoupledProcess, DiscreteProcess, FlowMatchingProcess, euler_step, make_process, make_schedule, sample_loop,
)
from radiodiff.diffusion.sampling import network_calls
from radiodiff.diffusion.prediction import prediction_target
from radiodiff.flux import flux_plan, full_plan, sampler_hash, scene_noise, stage1_midpoint, stage2_latent
from radiodiff.generation import LatentDiffusion
from radiodiff.models.unet import ConditionalUNet
from radiodiff.models.vae import AutoencoderKL
from radiodiff.options import Prediction, ScheduleKind
from radiodiff.training.rng import seeded_generator
from tests.conftest import randomised

SHAPE = (4, 3, 8, 8)


def _gen(seed: int) -> torch.Generator:
    return seeded_generator(seed)


def _oracle(x0: torch.Tensor):
    """The true velocity of the straight path through x_t that ends at x0: (x_t - x0) / t."""
    return lambda x_t, t: (x_t - x0) / t.view(-1, 1, 1, 1)


def test_forward_path_is_a_straight_line_with_exact_ends():
    process = FlowMatchingProcess()
    x0, noise = torch.randn(SHAPE, generator=_gen(0)), torch.randn(SHAPE, generator=_gen(1))
    assert torch.equal(process.add_noise(x0, noise, torch.zeros(4)), x0)
    assert torch.equal(process.add_noise(x0, noise, torch.ones(4)), noise)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    x_t = process.add_noise(x0, noise, t)
    torch.testing.assert_close(x_t[2], 0.4 * x0[2] + 0.6 * noise[2])
    torch.testing.assert_close(process.implied_noise(x_t, x0, t), noise, rtol=0, atol=1e-5)
    # the derivative along t is the velocity target, whatever t
    h = 1e-3
    slope = (process.add_noise(x0, noise, t + h) - process.add_noise(x0, noise, t - h)) / (2 * h)
    torch.testing.assert_close(slope, noise - x0, rtol=0, atol=1e-3)


def test_loss_is_zero_for_the_true_velocity_and_positive_otherwise():
    process = FlowMatchingProcess()
    x0, noise = torch.randn(SHAPE, generator=_gen(2)), torch.randn(SHAPE, generator=_gen(3))
    t = process.sample_training_times(4, generator=_gen(4))
    assert t.dtype == torch.float32 and bool((t >= 0).all() and (t < 1).all())
    x_t = process.add_noise(x0, noise, t)
    assert process.training_loss(noise - x0, x0=x0, noise=noise, t=t, x_t=x_t).item() == 0.0
    wrong = process.training_loss(noise, x0=x0, noise=noise, t=t, x_t=x_t)
    torch.testing.assert_close(wrong, x0.pow(2).mean())


@pytest.mark.parametrize("num_steps", [1, 2, 5])
def test_euler_with_the_true_velocity_lands_on_x0(num_steps):
    process = FlowMatchingProcess()
    x0 = torch.randn(SHAPE, generator=_gen(5))
    x_start = torch.randn(SHAPE, generator=_gen(6))
    landed = sample_loop(process, _oracle(x0), x_start, process.timesteps(num_steps))
    torch.testing.assert_close(landed, x0, rtol=0, atol=1e-5)


def test_one_euler_step_from_noise_with_the_path_velocity_is_exact():
    x0, noise = torch.randn(SHAPE, generator=_gen(7)), torch.randn(SHAPE, generator=_gen(8))
    out = euler_step(noise - x0, 1.0, 0.0, noise)
    assert torch.equal(out.prev_sample, out.pred_x0)
    torch.testing.assert_close(out.prev_sample, x0, rtol=0, atol=1e-6)
    halfway = euler_step(noise - x0, 1.0, 0.5, noise).prev_sample
    torch.testing.assert_close(halfway, 0.5 * x0 + 0.5 * noise, rtol=0, atol=1e-6)


@pytest.mark.parametrize("times", [(0.5, 0.5), (0.2, 0.6), (1.5, 0.5), (0.5, -0.1)])
def test_euler_step_refuses_bad_times(times):
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError):
        euler_step(x, *times, x)


def test_step_refuses_an_output_that_is_not_one_velocity():
    process = FlowMatchingProcess()
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="velocity"):
        process.step(torch.zeros(4, 6, 8, 8), 1.0, 0.0, x)


def test_config_times_and_grids_are_those_of_continuous_time():
    process = FlowMatchingProcess(num_train_steps=1000)
    assert process.config_time(600) == 0.6 and process.config_time(999) == 1.0
    for bad in (0, 1000, -5):
        with pytest.raises(ValueError):
            process.config_time(bad)
    assert process.timesteps(4) == (1.0, 0.75, 0.5, 0.25, 0.0)
    assert process.full_trajectory() is None
    assert make_process(DiffusionConfig(prediction=Prediction.FLOW)) == process


def test_flow_is_refused_by_the_discrete_conversions():
    schedule = make_schedule(ScheduleKind.LINEAR, 10)
    x, t = torch.zeros(1, 3, 2, 2), torch.tensor([3])
    assert Prediction("flow") is Prediction.FLOW and not Prediction.FLOW.on_schedule
    with pytest.raises(ValueError, match="continuous"):
        prediction_target(x, x, t, schedule, Prediction.FLOW)
    with pytest.raises(ValueError, match="continuous"):
        DiscreteProcess(schedule, Prediction.FLOW)


def test_bank_key_differs_from_v_and_kc_at_the_same_plan():
    flow = FlowMatchingProcess()
    v = DiscreteProcess(make_schedule(ScheduleKind.LINEAR, 1000), Prediction.V)
    kc = DecoupledProcess()
    keys = {sampler_hash(p, flux_plan(p, 600, 5, 1)) for p in (flow, v, kc)}
    assert len(keys) == 3
    # and kc and flow share the time grid, so only the objective tells them apart
    assert flux_plan(flow, 600, 5, 1) == flux_plan(kc, 600, 5, 1)


# -- a network on it -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    unet = randomised(ConditionalUNet(latent_channels=3, cond_channels=4, base_channels=8, channel_mults=(1, 2),
                                      num_res_blocks=1, cond_base_channels=4, time_scale=1000.0), 1)
    vae = AutoencoderKL(base_channels=8, channel_mults=(1, 2, 4), num_res_blocks=1).eval()
    return LatentDiffusion(unet, vae, FlowMatchingProcess(num_train_steps=40), 0.7)


def test_build_unet_gives_one_velocity_head_on_scaled_time():
    cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(prediction=Prediction.FLOW))
    unet = build_unet(cfg, cond_channels=4)
    assert unet.out_channels == 3 and unet.time_scale == 1000.0


def test_flux_prefix_then_tail_equals_one_trajectory_bit_for_bit(model):
    cond = torch.rand(3, 4, 32, 32)
    plan = flux_plan(model.process, 24, 3, 2)
    assert plan.prefix == (1.0, *plan.prefix[1:]) and plan.prefix[-1] == plan.tail[0] == 0.6
    x_start = scene_noise((3, 8, 8), [5, 6, 7], seed=1)
    with torch.no_grad():
        latent = stage2_latent(model, stage1_midpoint(model, cond, plan, x_start), cond, plan)
        joined = sample_loop(model.process, model.denoise_fn(cond), x_start, plan.prefix[:-1] + plan.tail)
        whole = sample_loop(model.process, model.denoise_fn(cond), x_start, full_plan(model.process, 4).tail)
    assert torch.equal(latent, joined)
    assert not torch.equal(latent, torch.zeros_like(latent)) and not torch.equal(latent, whole)


def test_oracle_tail_from_any_midpoint_lands_on_x0(model):
    # The tail-tuning construction: the noise a midpoint implies puts it on a straight path to x0.
    process = model.process
    x0, z_mid = torch.randn(2, 3, 8, 8, generator=_gen(9)), torch.randn(2, 3, 8, 8, generator=_gen(10))
    t_mid = torch.tensor([0.6, 0.6])
    noise_hat = process.implied_noise(z_mid, x0, t_mid)
    torch.testing.assert_close(process.add_noise(x0, noise_hat, t_mid), z_mid, rtol=0, atol=1e-6)
    for tail in (1, 3):
        plan = flux_plan(process, 24, 2, tail)
        landed = stage2_latent(model, z_mid, torch.zeros(2, 4, 32, 32), plan, denoise_fn=_oracle(x0))
        torch.testing.assert_close(landed, x0, rtol=0, atol=1e-5)


def test_a_toy_velocity_net_learns_a_fixed_target():
    # A network that sees x_t and t must learn to reach one fixed x0 from any noise: after a
    # few hundred steps one Euler step lands far closer to it than the untrained net does.
    torch.manual_seed(0)
    process = FlowMatchingProcess()
    x0 = torch.randn(1, 3, 4, 4, generator=_gen(11)).expand(16, -1, -1, -1)
    net = torch.nn.Sequential(torch.nn.Linear(49, 64), torch.nn.SiLU(), torch.nn.Linear(64, 48))

    def velocity(x_t, t):
        return net(torch.cat([x_t.flatten(1), t.view(-1, 1)], dim=1)).view_as(x_t)

    def one_step_error() -> float:
        with torch.no_grad():
            landed = sample_loop(process, velocity, torch.randn(16, 3, 4, 4, generator=_gen(12)), process.timesteps(1))
        return (landed - x0).pow(2).mean().item()

    before = one_step_error()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    generator = _gen(13)
    for _ in range(300):
        noise = torch.randn(x0.shape, generator=generator)
        t = process.sample_training_times(16, generator=generator)
        x_t = process.add_noise(x0, noise, t)
        loss = process.training_loss(velocity(x_t, t), x0=x0, noise=noise, t=t, x_t=x_t)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert one_step_error() < 0.25 * before


def test_dataclass_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FlowMatchingProcess().num_train_steps = 3


# -- Heun -------------------------------------------------------------------------------------


def test_heun_is_second_order_where_euler_is_first_on_a_curved_field():
    """dx/dt = x from t = 1 to 0 lands on x(1) / e: halving the step quarters Heun's error and
    halves Euler's (Heun's last step, into t = 0, is Euler's: one local error of the same order),
    and Heun needs two calls a step but one on the last."""
    x1 = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    exact = x1 / torch.e

    def error(process, steps):
        calls = []

        def field(x, t):
            calls.append(t)
            return x

        landed = sample_loop(process, field, x1, process.timesteps(steps))
        assert len(calls) == network_calls(process, steps) == (2 * steps - 1 if process is heun else steps)
        return (landed - exact).abs().max().item()

    euler, heun = FlowMatchingProcess(), FlowMatchingProcess().second_order()
    assert heun.calls_per_step == 2 and euler.calls_per_step == 1
    assert error(euler, 8) / error(euler, 16) == pytest.approx(2.0, rel=0.1)
    assert error(heun, 8) / error(heun, 16) == pytest.approx(4.0, rel=0.1)
    assert error(heun, 4) < error(euler, 7)  # at the same 7 calls


def test_heun_with_the_true_velocity_lands_on_x0_and_keys_its_own_bank():
    heun = FlowMatchingProcess().second_order()
    x0, noise = torch.randn(2, 3, 4, 4, generator=_gen(3)), torch.randn(2, 3, 4, 4, generator=_gen(4))
    landed = sample_loop(heun, lambda x, t: noise - x0, noise, heun.timesteps(1))
    torch.testing.assert_close(landed, x0, rtol=0, atol=1e-6)
    assert sampler_hash(heun, flux_plan(heun, 600, 5, 1)) != sampler_hash(FlowMatchingProcess(),
                                                                           flux_plan(heun, 600, 5, 1))
    assert DiscreteProcess(make_schedule(ScheduleKind.LINEAR, 1000), Prediction.V).second_order() is None


def test_heun_prefix_then_tail_equals_one_trajectory_bit_for_bit(model):
    heun = model.with_process(model.process.second_order())
    cond = torch.rand(2, 4, 32, 32)
    plan = flux_plan(heun.process, 24, 3, 2)
    x_start = scene_noise((3, 8, 8), [5, 6], seed=2)
    with torch.no_grad():
        latent = stage2_latent(heun, stage1_midpoint(heun, cond, plan, x_start), cond, plan)
        joined = sample_loop(heun.process, heun.denoise_fn(cond), x_start, plan.prefix[:-1] + plan.tail)
        euler = sample_loop(model.process, model.denoise_fn(cond), x_start, plan.prefix[:-1] + plan.tail)
    assert torch.equal(latent, joined) and not torch.equal(latent, euler)
