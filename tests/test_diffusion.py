"""Schedules, prediction conversions, losses and samplers, checked against exact answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiodiff.diffusion import (
    CLEAN,
    DiscreteProcess,
    NoiseSchedule,
    Prediction,
    ScheduleKind,
    ddim_step,
    ddpm_step,
    diffusion_loss,
    drop_condition_channels,
    guided_denoise_fn,
    make_schedule,
    prediction_target,
    q_sample,
    sample_loop,
    sample_loop_progressive,
    sample_timesteps,
    schedule_fingerprint,
    split_prediction,
)
from radiodiff.options import SamplerKind

KINDS = list(ScheduleKind)
PREDICTIONS = [p for p in Prediction if p.on_schedule]  # kc and flow have their own (test_decoupled.py, test_flow.py)
# schedule_fingerprint of the linear 1000-step schedule; a change orphans existing banks.
PINNED_LINEAR_1000 = "98dff562063ff23c"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _oracle(x0: torch.Tensor, schedule: NoiseSchedule, prediction: Prediction):
    """A perfect network for a data distribution concentrated on the single point x0."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # float64 inside, so the only rounding left is the sampler's own.
        ab = torch.as_tensor(schedule.alphas_cumprod[t.numpy()])[:, None, None, None]
        eps = (x_t.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()
        return prediction_target(x0.double(), eps, t, schedule, prediction).to(x_t.dtype)

    return denoise


# -- schedules ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(kind):
    schedule = make_schedule(kind, 1000)
    ab = schedule.alphas_cumprod
    assert ab.dtype == np.float64 and schedule.betas.dtype == np.float64
    assert ab.shape == (1000,) and schedule.num_steps == 1000
    assert np.all(np.diff(ab) < 0)
    assert np.all((ab > 0) & (ab < 1))
    np.testing.assert_allclose(ab, np.cumprod(1 - schedule.betas))


def test_linear_and_cosine_betas_have_documented_ends():
    linear = make_schedule(ScheduleKind.LINEAR, 1000).betas
    assert linear[0] == pytest.approx(1e-4) and linear[-1] == pytest.approx(0.02)
    cosine = make_schedule(ScheduleKind.COSINE, 1000).betas
    assert cosine.max() <= 0.999 and cosine[-1] == pytest.approx(0.999)
    assert cosine[0] < 1e-4


def test_schedule_arrays_are_read_only():
    schedule = make_schedule(ScheduleKind.LINEAR, 10)
    with pytest.raises(ValueError):
        schedule.betas[0] = 0.5


def test_schedule_rejects_bad_betas_and_steps():
    with pytest.raises(ValueError):
        NoiseSchedule.from_betas(np.array([0.1, 1.0]))
    with pytest.raises(ValueError):
        make_schedule(ScheduleKind.COSINE, 0)


def test_fingerprint_is_stable_and_discriminates():
    a = schedule_fingerprint(make_schedule(ScheduleKind.LINEAR, 1000))
    assert a == schedule_fingerprint(make_schedule(ScheduleKind.LINEAR, 1000))
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != schedule_fingerprint(make_schedule(ScheduleKind.COSINE, 1000))
    assert a != schedule_fingerprint(make_schedule(ScheduleKind.LINEAR, 999))
    assert a == PINNED_LINEAR_1000


def test_alphas_cumprod_at_handles_clean_end_and_range():
    schedule = make_schedule(ScheduleKind.LINEAR, 10)
    values = schedule.alphas_cumprod_at(torch.tensor([-1, 0, 9]))
    np.testing.assert_array_equal(values, [1.0, schedule.alphas_cumprod[0], schedule.alphas_cumprod[9]])
    with pytest.raises(IndexError):
        schedule.alphas_cumprod_at(10)


# -- prediction conversions and losses --------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_split_prediction_inverts_q_sample(kind, prediction):
    schedule = make_schedule(kind, 1000)
    g = _gen(0)
    x0 = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 500, 998, 999])
    x_t = q_sample(x0, t, noise, schedule)
    target = prediction_target(x0, noise, t, schedule, prediction)
    pred_x0, pred_eps = split_prediction(target, x_t, t, schedule, prediction)
    torch.testing.assert_close(pred_x0, x0, rtol=0, atol=1e-8)
    torch.testing.assert_close(pred_eps, noise, rtol=0, atol=1e-8)


def test_q_sample_matches_closed_form_and_keeps_dtype():
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    x0, noise = torch.ones(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    x_t = q_sample(x0, torch.tensor([0, 99]), noise, schedule)
    ab = schedule.alphas_cumprod[[0, 99]]
    expected = np.sqrt(ab) + 2 * np.sqrt(1 - ab)
    assert x_t.dtype == torch.float32
    torch.testing.assert_close(x_t[:, 0, 0, 0], torch.tensor(expected, dtype=torch.float32))


def test_v_target_has_known_value():
    schedule = make_schedule(ScheduleKind.COSINE, 50)
    x0, noise = torch.full((1, 1, 1, 1), 3.0), torch.full((1, 1, 1, 1), -1.0)
    ab = schedule.alphas_cumprod[7]
    v = prediction_target(x0, noise, torch.tensor([7]), schedule, Prediction.V)
    assert v.item() == pytest.approx(np.sqrt(ab) * -1.0 - np.sqrt(1 - ab) * 3.0, rel=1e-6)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_diffusion_loss_zero_at_target_positive_elsewhere(prediction):
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    g = _gen(1)
    x0, noise = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    t = sample_timesteps(4, schedule, generator=g)
    target = prediction_target(x0, noise, t, schedule, prediction)
    assert diffusion_loss(target, x0, noise, t, schedule, prediction).item() == pytest.approx(0.0, abs=1e-12)
    loss = diffusion_loss(target + 0.5, x0, noise, t, schedule, prediction)
    assert loss.item() == pytest.approx(0.25, rel=1e-5)


def test_sample_timesteps_cover_range_reproducibly():
    schedule = make_schedule(ScheduleKind.LINEAR, 10)
    t = sample_timesteps(2000, schedule, generator=_gen(2))
    assert t.dtype == torch.int64 and set(t.tolist()) == set(range(10))
    assert torch.equal(t, sample_timesteps(2000, schedule, generator=_gen(2)))


# -- condition dropout ---------------------------------------------------------------------


def test_drop_condition_zeroes_only_dynamic_channels_at_rate_p():
    cond = torch.rand(4000, 4, 2, 2) + 0.5
    mask = [False, True, True, False]
    out = drop_condition_channels(cond, mask, 0.3, _gen(3))
    assert torch.equal(out[:, [0, 3]], cond[:, [0, 3]])
    dynamic = out[:, [1, 2]]
    dropped = dynamic.flatten(1).eq(0).all(dim=1)
    kept = torch.equal(dynamic[~dropped], cond[:, [1, 2]][~dropped])
    assert kept and dynamic[~dropped].ne(0).all()
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert cond.min() >= 0.5, "the input must not be modified in place"


def test_drop_condition_edge_probabilities_and_errors():
    cond = torch.ones(8, 3, 2, 2)
    assert torch.equal(drop_condition_channels(cond, [True, True, False], 0.0, _gen(0)), cond)
    all_dropped = drop_condition_channels(cond, [True, True, False], 1.0, _gen(0))
    assert all_dropped[:, :2].eq(0).all() and all_dropped[:, 2].eq(1).all()
    with pytest.raises(ValueError):
        drop_condition_channels(cond, [True, False], 0.5, _gen(0))
    with pytest.raises(ValueError):
        drop_condition_channels(cond, [True, True, False], 1.5, _gen(0))


# -- samplers ------------------------------------------------------------------------------


def test_discrete_timesteps_descend_from_last_step_to_clean():
    process = DiscreteProcess(make_schedule(ScheduleKind.LINEAR, 1000), Prediction.EPS)
    steps = process.timesteps(50)
    assert len(steps) == 51 and steps[0] == 999 and steps[-2:] == (0, CLEAN)
    assert all(later < earlier for earlier, later in zip(steps, steps[1:]))
    assert process.timesteps(1) == (999, CLEAN)
    assert process.timesteps(3, start=600, end=300) == (600, 500, 400, 300)  # a Flux prefix
    every = DiscreteProcess(make_schedule(ScheduleKind.LINEAR, 7), Prediction.EPS).timesteps(7)
    assert every == (6, 5, 4, 3, 2, 1, 0, CLEAN)
    with pytest.raises(ValueError):
        process.timesteps(1001)


def test_ddim_step_matches_hand_formula():
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    x_t, eps = torch.full((1, 1, 1, 1), 0.7), torch.full((1, 1, 1, 1), 0.2)
    out = ddim_step(eps, 60, 40, x_t, schedule, Prediction.EPS)
    a, b = schedule.alphas_cumprod[60], schedule.alphas_cumprod[40]
    x0 = (0.7 - np.sqrt(1 - a) * 0.2) / np.sqrt(a)
    assert out.pred_x0.item() == pytest.approx(x0, rel=1e-6)
    assert out.prev_sample.item() == pytest.approx(np.sqrt(b) * x0 + np.sqrt(1 - b) * 0.2, rel=1e-6)


def test_ddim_eta_zero_is_deterministic_and_draws_no_noise():
    schedule = make_schedule(ScheduleKind.COSINE, 100)
    g = _gen(4)
    x_t, out = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    state = g.get_state()
    first = ddim_step(out, 50, 30, x_t, schedule, Prediction.V, eta=0.0, generator=g)
    second = ddim_step(out, 50, 30, x_t, schedule, Prediction.V, eta=0.0, generator=g)
    assert torch.equal(first.prev_sample, second.prev_sample)
    assert torch.equal(g.get_state(), state)


def test_ddim_eta_one_equals_ddpm_posterior():
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    x_t, out = torch.randn(2, 3, 4, 4, generator=_gen(5)), torch.randn(2, 3, 4, 4, generator=_gen(6))
    ddim = ddim_step(out, 50, 49, x_t, schedule, Prediction.EPS, eta=1.0, generator=_gen(7))
    ddpm = ddpm_step(out, 50, 49, x_t, schedule, Prediction.EPS, generator=_gen(7))
    torch.testing.assert_close(ddim.prev_sample, ddpm.prev_sample, rtol=1e-5, atol=1e-5)


def test_ddpm_step_noise_has_posterior_variance():
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    x_t, out = torch.zeros(20000, 1, 1, 1), torch.zeros(20000, 1, 1, 1)
    prev = ddpm_step(out, 30, 29, x_t, schedule, Prediction.EPS, generator=_gen(8)).prev_sample
    beta, a, b = schedule.betas[30], schedule.alphas_cumprod[30], schedule.alphas_cumprod[29]
    assert prev.var().item() == pytest.approx(beta * (1 - b) / (1 - a), rel=0.05)
    assert prev.mean().item() == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_with_oracle_lands_on_x0(kind, prediction, eta):
    schedule = make_schedule(kind, 1000)
    x0 = torch.randn(2, 3, 8, 8, generator=_gen(9))
    process = DiscreteProcess(schedule, prediction, eta=eta)
    for start in (0, 17):
        x_start = torch.randn(2, 3, 8, 8, generator=_gen(start)) * 3
        timesteps = process.timesteps(25)
        out = sample_loop(process, _oracle(x0, schedule, prediction), x_start, timesteps, start_index=start,
                          generator=_gen(10))
        torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_ddpm_with_oracle_lands_on_x0(prediction):
    schedule = make_schedule(ScheduleKind.LINEAR, 200)
    x0 = torch.randn(1, 3, 4, 4, generator=_gen(11))
    process = DiscreteProcess(schedule, prediction, sampler=SamplerKind.DDPM)
    out = sample_loop(process, _oracle(x0, schedule, prediction), torch.randn(1, 3, 4, 4, generator=_gen(12)),
                      process.timesteps(200), generator=_gen(13))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def _dummy_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Analytic stand-in for a network: a smooth function of x_t and t."""
    return torch.tanh(x_t) * (t.float()[:, None, None, None] + 1) / 1000


def test_split_loop_equals_full_loop_bit_for_bit():
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    process = DiscreteProcess(schedule, Prediction.EPS, sampler=SamplerKind.DDPM)
    timesteps = process.timesteps(20)
    x_start = torch.randn(2, 3, 4, 4, generator=_gen(14))
    full = sample_loop(process, _dummy_model, x_start, timesteps, generator=_gen(15))
    g = _gen(15)
    mid = sample_loop(process, _dummy_model, x_start, timesteps, stop_index=8, generator=g)
    split = sample_loop(process, _dummy_model, mid, timesteps, start_index=8, generator=g)
    assert torch.equal(full, split)
    assert not torch.equal(full, sample_loop(process, _dummy_model, x_start, timesteps, generator=_gen(16)))


def test_the_loop_with_grad_gives_the_same_latent_and_a_gradient_through_every_step():
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    process = DiscreteProcess(schedule, Prediction.V)
    scale = torch.tensor(0.5, requires_grad=True)

    def denoise(x_t, t):
        return scale * _dummy_model(x_t, t)

    x_start, timesteps = torch.randn(2, 3, 4, 4, generator=_gen(17)), process.timesteps(3)
    plain = sample_loop(process, denoise, x_start, timesteps)
    traced = sample_loop(process, denoise, x_start, timesteps, grad=True)
    assert not plain.requires_grad and torch.equal(plain, traced.detach())
    traced.square().sum().backward()
    assert scale.grad is not None and scale.grad != 0
    with torch.no_grad():  # the switch wins over the caller's mode, both ways
        assert sample_loop(process, denoise, x_start, timesteps, grad=True).requires_grad


def test_progressive_yields_each_step_and_leaves_grad_mode_alone():
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    process = DiscreteProcess(schedule, Prediction.EPS)
    seen = []

    def denoise(x_t, t):
        seen.append(int(t[0]))
        return _dummy_model(x_t, t)

    outputs = []
    for output in sample_loop_progressive(process, denoise, torch.randn(1, 3, 4, 4), process.timesteps(10),
                                          start_index=2, stop_index=7):
        assert torch.is_grad_enabled()
        outputs.append(output)
    assert len(outputs) == 5 and seen == list(process.timesteps(10)[2:7])
    assert all(o.prev_sample.shape == o.pred_x0.shape == (1, 3, 4, 4) for o in outputs)
    with pytest.raises(ValueError):
        next(sample_loop_progressive(process, denoise, torch.zeros(1), [3, 2], start_index=2, stop_index=1))
    with pytest.raises(ValueError):  # a grid must descend
        next(sample_loop_progressive(process, denoise, torch.zeros(1), [2, 3, CLEAN]))


def test_sampler_follows_input_dtype():
    schedule = make_schedule(ScheduleKind.COSINE, 50)
    process = DiscreteProcess(schedule, Prediction.V, eta=0.5)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    out = sample_loop(process, _dummy_model, x, process.timesteps(5), generator=_gen(0))
    assert out.dtype == torch.float64


def test_guided_denoise_fn_combines_linearly():
    x, t = torch.ones(1, 1, 1, 1), torch.zeros(1, dtype=torch.long)

    def cond(x_t, _):
        return 3 * x_t

    def uncond(x_t, _):
        return x_t

    assert guided_denoise_fn(cond, uncond, 1.0) is cond
    assert guided_denoise_fn(cond, uncond, 0.0)(x, t).item() == 1.0
    assert guided_denoise_fn(cond, uncond, 2.5)(x, t).item() == pytest.approx(1 + 2.5 * 2)
