"""RadioDiff's decoupled objective: forward process, preconditioning, loss, sampler and two-head UNet."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from radiodiff.config import DiffusionConfig, LDMConfig, UNetConfig, load_params
from radiodiff.diffusion import Prediction, ddim_step, make_schedule, prediction_target, split_prediction
from radiodiff.artifacts.denoiser import build_unet
from radiodiff.diffusion.decoupled import (
    DecoupledProcess,
    c_loss_weight,
    decoupled_loss,
    decoupled_step,
    head_coefficients,
    noise_loss_weight,
    precondition,
    q_sample_decoupled,
    sample_times,
)
from radiodiff.diffusion.continuous import decoupled_times
from radiodiff.diffusion.schedule import ScheduleKind, as_coefficient
from radiodiff.diffusion.sampling import sample_loop, sample_loop_progressive
from radiodiff.models.unet import ConditionalUNet
from radiodiff.options import Preconditioning
from tests.conftest import REPO_ROOT

KINDS = list(Preconditioning)
SHAPE = (2, 3, 4, 4)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _raw_from_heads(c, noise, x_t, t, kind):
    """Invert `precondition`: the raw [F1 | F2] whose heads are (c, noise). Where a head's
    output weight is 0 (the noise head at t = 1) the skip alone decides, so F2 = 0 there."""
    co = head_coefficients(t, kind)
    out_noise = np.where(co.out_noise == 0, 1.0, co.out_noise)
    f_c = (c - as_coefficient(co.skip_c, x_t) * x_t) / as_coefficient(co.out_c, x_t)
    f_noise = (noise - as_coefficient(co.skip_noise, x_t) * x_t) / as_coefficient(out_noise, x_t)
    f_noise = f_noise * as_coefficient((co.out_noise != 0).astype(np.float64), x_t)
    return torch.cat([f_c, f_noise], dim=1)


def _oracle(x0: torch.Tensor, kind: Preconditioning):
    """A perfect two-head network for data concentrated on the single point x0 (float64 inside)."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t64, x64, clean = t.double(), x_t.double(), x0.double()
        shaped = t64[:, None, None, None]
        noise = (x64 - (1 - shaped) * clean) / shaped.sqrt()
        return _raw_from_heads(-clean, noise, x64, t64, kind).to(x_t.dtype)

    return denoise


# -- forward process -----------------------------------------------------------------------


def test_forward_process_ends_and_closed_form():
    g = _gen(0)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    assert torch.equal(q_sample_decoupled(x0, 1.0, noise), noise)
    assert torch.equal(q_sample_decoupled(x0, 0.0, noise), x0)
    torch.testing.assert_close(q_sample_decoupled(x0, 1e-12, noise), x0, rtol=0, atol=1e-5)
    mixed = q_sample_decoupled(x0, torch.tensor([0.25, 1.0]), noise)
    torch.testing.assert_close(mixed[0], x0[0] + (-x0[0]) * 0.25 + 0.5 * noise[0])
    assert torch.equal(mixed[1], noise[1])
    with pytest.raises(ValueError):
        q_sample_decoupled(x0, 1.5, noise)


def test_sample_times_are_uniform_above_eps_and_reproducible():
    t = sample_times(20000, generator=_gen(1))
    assert t.dtype == torch.float32 and t.shape == (20000,)
    assert t.min() >= 1e-4 and t.max() <= 1.0
    assert t.mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(t, sample_times(20000, generator=_gen(1)))
    assert sample_times(10, generator=_gen(2), eps=0.5).min() >= 0.5


# -- preconditioning -----------------------------------------------------------------------


def test_zero_network_predicts_linear_mmse_with_consistent_heads():
    x_t = torch.randn(SHAPE, generator=_gen(3), dtype=torch.float64)
    raw = torch.zeros(2, 6, 4, 4, dtype=torch.float64)
    t = 0.3
    c_pred, noise_pred = precondition(raw, x_t, t)
    var = 1 - t + t * t
    torch.testing.assert_close(c_pred, -(1 - t) / var * x_t)
    torch.testing.assert_close(noise_pred, math.sqrt(t) / var * x_t)
    # both heads give the same clean estimate: x_t - C t - sqrt(t) n == -C
    torch.testing.assert_close(x_t - c_pred * t - math.sqrt(t) * noise_pred, -c_pred)
    # RadioDiff's C skip has the opposite sign of C = -x0: as t -> 0 it predicts +x0
    c_radiodiff, _ = precondition(raw, x_t, 1e-6, Preconditioning.RADIODIFF)
    torch.testing.assert_close(c_radiodiff, x_t, rtol=0, atol=1e-5)


def test_mmse_raw_targets_have_unit_variance():
    g = _gen(4)
    x0, noise = torch.randn(40000, 1, 1, 1, generator=g), torch.randn(40000, 1, 1, 1, generator=g)
    for t in (0.05, 0.3, 0.7, 0.95):
        x_t = q_sample_decoupled(x0, t, noise)
        raw = _raw_from_heads(-x0, noise, x_t, t, Preconditioning.MMSE)
        assert raw[:, 0].var().item() == pytest.approx(1.0, rel=0.03)
        assert raw[:, 1].var().item() == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("kind", KINDS)
def test_precondition_accepts_a_pair_and_checks_shapes(kind):
    x_t, raw = torch.randn(SHAPE), torch.randn(2, 6, 4, 4)
    t = torch.tensor([0.2, 0.9])
    joined = precondition(raw, x_t, t, kind)
    paired = precondition((raw[:, :3], raw[:, 3:]), x_t, t, kind)
    assert torch.equal(joined[0], paired[0]) and torch.equal(joined[1], paired[1])
    with pytest.raises(ValueError, match="channels"):
        precondition(torch.randn(2, 3, 4, 4), x_t, t, kind)


# -- loss ----------------------------------------------------------------------------------


def test_loss_weights_as_specified():
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    expected = torch.tensor([2 * math.e, 2 * math.exp(0.75), 2.0], dtype=torch.float64)
    torch.testing.assert_close(c_loss_weight(t), expected)
    torch.testing.assert_close(noise_loss_weight(t), torch.tensor([1.0, math.exp(0.5), math.e], dtype=torch.float64))


@pytest.mark.parametrize("kind", KINDS)
def test_loss_is_zero_for_the_oracle_raw_outputs(kind):
    g = _gen(5)
    x0 = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    t = sample_times(2, generator=g).double()
    x_t = q_sample_decoupled(x0, t, noise)
    c_pred, noise_pred = precondition(_raw_from_heads(-x0, noise, x_t, t, kind), x_t, t, kind)
    for l1_weight in (0.0, 1.0):
        loss = decoupled_loss(c_pred, noise_pred, x0, noise, t, l1_weight=l1_weight)
        assert loss.item() == pytest.approx(0, abs=1e-12)


def test_loss_weighs_each_head_per_sample():
    x0, noise = torch.randn(SHAPE, generator=_gen(6)), torch.randn(SHAPE, generator=_gen(7))
    t = torch.tensor([0.1, 0.8])
    off_c = decoupled_loss(-x0 + 0.5, noise, x0, noise, t)
    assert off_c.item() == pytest.approx(c_loss_weight(t).mean().item() * 0.25, rel=1e-5)
    off_noise = decoupled_loss(-x0, noise - 0.5, x0, noise, t, l1_weight=2.0)
    assert off_noise.item() == pytest.approx(noise_loss_weight(t).mean().item() * (0.25 + 2 * 0.5), rel=1e-5)
    with pytest.raises(ValueError):
        decoupled_loss(-x0, noise, x0, noise, torch.tensor([0.5]))


# -- sampler -------------------------------------------------------------------------------


def test_decoupled_times_are_uniform_with_exact_ends():
    times = decoupled_times(5)
    assert len(times) == 6 and times[0] == 1.0 and times[-1] == 0.0
    np.testing.assert_allclose(np.diff(times), -0.2, atol=1e-15)
    assert decoupled_times(1) == (1.0, 0.0)
    assert decoupled_times(2, 0.4) == (0.4, 0.2, 0.0)
    assert decoupled_times(3, 1.0, 0.4)[-1] == 0.4
    fine = decoupled_times(10)
    np.testing.assert_allclose(decoupled_times(6, 1.0, fine[6]) + decoupled_times(4, fine[6])[1:], fine, atol=1e-15)
    for bad in ((0,), (2, 1.5), (2, 0.3, 0.3)):
        with pytest.raises(ValueError):
            decoupled_times(*bad)


@pytest.mark.parametrize("t", [1.0, 0.7, 0.3, 1e-3])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_one_step_with_true_heads_lands_on_x0_without_noise(t, eta):
    g = _gen(8)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    x_t = q_sample_decoupled(x0, t, noise)
    state = g.get_state()
    out = decoupled_step(-x0, noise, x_t, t, 0.0, eta=eta, generator=g)
    torch.testing.assert_close(out.prev_sample, x0, rtol=0, atol=1e-5)
    assert torch.equal(out.prev_sample, out.pred_x0)
    assert torch.equal(g.get_state(), state), "the last step must draw no noise"


def test_step_matches_radiodiffs_update_when_heads_agree():
    g = _gen(9)
    x0 = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    t, s = 0.8, 0.25
    x_t, c = q_sample_decoupled(x0, t, noise), -x0
    prev = decoupled_step(c, noise, x_t, t, t - s, generator=_gen(10)).prev_sample
    z = torch.randn(SHAPE, generator=_gen(10), dtype=torch.float64)
    expected = x_t - c * s - s / math.sqrt(t) * noise + math.sqrt(s * (t - s) / t) * z
    torch.testing.assert_close(prev, expected, rtol=0, atol=1e-12)


def test_step_draws_the_brownian_bridge_posterior():
    t, t_prev, clean = 0.8, 0.3, 0.5
    x0 = torch.full((40000, 1, 1, 1), clean, dtype=torch.float64)
    x_t = torch.zeros_like(x0)
    noise = (x_t - (1 - t) * x0) / math.sqrt(t)
    prev = decoupled_step(-x0, noise, x_t, t, t_prev, generator=_gen(11)).prev_sample
    mean = (1 - t_prev) * clean + t_prev / t * (0.0 - (1 - t) * clean)
    assert prev.mean().item() == pytest.approx(mean, abs=0.01)
    assert prev.var().item() == pytest.approx(t_prev * (t - t_prev) / t, rel=0.03)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_step_keeps_the_forward_marginal(eta):
    t, t_prev = 0.9, 0.4
    x0 = torch.full((40000, 1, 1, 1), -1.0, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=_gen(12), dtype=torch.float64)
    prev = decoupled_step(-x0, noise, q_sample_decoupled(x0, t, noise), t, t_prev, eta=eta,
                          generator=_gen(13)).prev_sample
    assert prev.mean().item() == pytest.approx(-(1 - t_prev), abs=0.015)
    assert prev.var().item() == pytest.approx(t_prev, rel=0.03)


def test_step_rejects_bad_times_and_eta():
    x = torch.zeros(SHAPE)
    for t, t_prev, eta in ((0.5, 0.5, 1.0), (1.2, 0.5, 1.0), (0.5, -0.1, 1.0), (0.5, 0.2, 1.5)):
        with pytest.raises(ValueError):
            decoupled_step(x, x, x, t, t_prev, eta=eta)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("num_steps", [1, 2, 5, 20])
def test_loop_with_oracle_lands_on_x0(kind, eta, num_steps):
    x0 = torch.randn(SHAPE, generator=_gen(14))
    times = decoupled_times(num_steps)
    for start in sorted({0, num_steps // 2}):
        x_start = torch.randn(SHAPE, generator=_gen(start)) * 2
        process = DecoupledProcess(preconditioning=kind, eta=eta)
        out = sample_loop(process, _oracle(x0, kind), x_start, times, start_index=start, generator=_gen(15))
        torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def _dummy_heads(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Analytic stand-in for a two-head network: smooth in x_t and t."""
    shaped = t[:, None, None, None]
    return torch.cat([torch.tanh(x_t) * shaped, torch.sin(x_t) * (1 - shaped)], dim=1)


def test_split_loop_equals_full_loop_bit_for_bit():
    process = DecoupledProcess(eta=1.0)
    times = process.timesteps(10)
    x_start = torch.randn(SHAPE, generator=_gen(16))
    full = sample_loop(process, _dummy_heads, x_start, times, generator=_gen(17))
    g = _gen(17)
    mid = sample_loop(process, _dummy_heads, x_start, times, stop_index=6, generator=g)
    split = sample_loop(process, _dummy_heads, mid, times, start_index=6, generator=g)
    assert torch.equal(full, split)
    assert not torch.equal(full, sample_loop(process, _dummy_heads, x_start, times, generator=_gen(18)))


def test_progressive_passes_float_times_and_leaves_grad_mode_alone():
    seen = []

    def denoise(x_t, t):
        assert t.dtype == torch.float32 and t.shape == (x_t.shape[0],)
        seen.append(t[0].item())
        return _dummy_heads(x_t, t)

    process = DecoupledProcess(eta=1.0)
    times = process.timesteps(5)
    assert times == decoupled_times(5)
    outputs = []
    for output in sample_loop_progressive(process, denoise, torch.randn(SHAPE), times, start_index=1, stop_index=4,
                                          generator=_gen(20)):
        assert torch.is_grad_enabled()
        outputs.append(output)
    assert len(outputs) == 3 and seen == pytest.approx(list(times[1:4]))
    no_step = sample_loop(process, denoise, torch.ones(SHAPE), times, start_index=2, stop_index=2)
    assert torch.equal(no_step, torch.ones(SHAPE))
    with pytest.raises(ValueError):
        sample_loop(process, denoise, torch.zeros(SHAPE), times, start_index=3, stop_index=2)
    with pytest.raises(ValueError):
        sample_loop(process, denoise, torch.zeros(SHAPE), (0.5, 0.7, 0.0))


# -- the Prediction enum -------------------------------------------------------------------


def test_kc_is_refused_by_the_discrete_conversions():
    schedule = make_schedule(ScheduleKind.LINEAR, 10)
    x, t = torch.zeros(1, 3, 2, 2), torch.tensor([3])
    assert Prediction("kc") is Prediction.KC
    with pytest.raises(ValueError, match="continuous"):
        prediction_target(x, x, t, schedule, Prediction.KC)
    with pytest.raises(ValueError, match="continuous"):
        split_prediction(x, x, t, schedule, Prediction.KC)
    with pytest.raises(ValueError, match="continuous"):
        ddim_step(x, 3, 1, x, schedule, Prediction.KC)


# -- two-head UNet -------------------------------------------------------------------------


def _toy_unet(**overrides) -> ConditionalUNet:
    torch.manual_seed(0)
    kwargs = dict(cond_channels=4, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, cond_base_channels=4)
    return ConditionalUNet(**{**kwargs, **overrides}).eval()


def test_two_head_unet_takes_float_times_and_scales_them():
    unet = _toy_unet(two_heads=True, time_scale=1000.0)
    x_t, cond = torch.randn(2, 3, 8, 8), torch.rand(2, 4, 32, 32)
    with torch.no_grad():
        out = unet(x_t, torch.tensor([1e-4, 0.5]), cond)
        assert out.shape == (2, 6, 8, 8) and torch.equal(out, torch.zeros_like(out))
        torch.nn.init.normal_(unet.output[-1].weight, std=0.1)
        steps = _toy_unet(two_heads=True)
        steps.load_state_dict(unet.state_dict())
        scaled = unet(x_t, torch.tensor([0.25, 0.5]), cond)
        torch.testing.assert_close(scaled, steps(x_t, torch.tensor([250.0, 500.0]), cond))
        assert not torch.allclose(scaled, unet(x_t, torch.tensor([0.26, 0.5]), cond))
    with pytest.raises(ValueError):
        _toy_unet(two_heads=True, out_channels=3)
    with pytest.raises(ValueError):
        _toy_unet(time_scale=0.0)


def test_build_unet_takes_heads_and_time_scale_from_the_objective():
    cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(prediction=Prediction.KC))
    unet = build_unet(cfg, cond_channels=4)
    assert unet.out_channels == 6 and unet.time_scale == 1000.0
    plain = build_unet(dataclasses.replace(cfg, diffusion=DiffusionConfig(prediction=Prediction.V)), 4)
    assert plain.out_channels == 3 and plain.time_scale == 1.0


def test_paper_profile_builds_with_two_heads_and_runs_one_forward():
    # About 2 s on one CPU thread (build 0.6 s, forward 1.8 s), so not marked slow.
    params = load_params(REPO_ROOT / "profiles" / "paper.yaml")
    assert params.ldm.diffusion.prediction is Prediction.KC  # RadioDiff's own
    assert [p for p in params.ldm_alt.derive(params.ldm)] == [Prediction.V, Prediction.FLOW]
    unet = build_unet(params.ldm, params.condition.channels).eval()
    assert unet.out_channels == 6 and unet.output[-1].out_channels == 6
    side = params.prepare.resolution
    latent, cond = torch.randn(1, 3, side // 4, side // 4), torch.rand(1, params.condition.channels, side, side)
    with torch.no_grad():
        assert unet(latent, torch.tensor([0.5]), cond).shape == (1, 6, 64, 64)
