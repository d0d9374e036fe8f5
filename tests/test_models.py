"""Networks at toy width: shapes, the condition path, building blocks, and that they can learn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radiodiff.diffusion import Prediction, ScheduleKind, diffusion_loss, make_schedule, q_sample
from radiodiff.models.attention import WindowAttention
from radiodiff.models.baseline import SupervisedUNet
from radiodiff.models.distributions import DiagonalGaussian
from radiodiff.models.unet import ConditionalUNet
from radiodiff.models.vae import AutoencoderKL
from radiodiff.models.vae_loss import estimate_scale_factor, vae_loss
from radiodiff.options import AttentionKind, ReconKind
from radiodiff.models.fft_filter import FourierFilter


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _toy_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1)


def _toy_unet(**overrides) -> ConditionalUNet:
    torch.manual_seed(0)
    kwargs = dict(cond_channels=5, base_channels=16, channel_mults=(1, 2), num_res_blocks=1, cond_base_channels=8)
    return ConditionalUNet(**{**kwargs, **overrides})


def _adam_losses(model: nn.Module, loss_fn, steps: int = 30, lr: float = 2e-3) -> list[float]:
    """Loss per step of `steps` Adam updates, on one intra-op thread.

    Toy-width ops gain nothing from a second thread, and on a busy 2-core machine the
    OpenMP hand-off made these 30 steps take 25 s instead of 1 s; the count is restored.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        for _ in range(steps):
            loss = loss_fn()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    return losses


# -- VAE -----------------------------------------------------------------------------------


def test_vae_round_trip_shapes_and_kl():
    vae = _toy_vae()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    recon, posterior = vae(x, generator=_gen(0))
    assert vae.downsample_factor == 4
    assert recon.shape == x.shape
    assert posterior.mean.shape == posterior.logvar.shape == (2, 3, 8, 8)
    kl = posterior.kl()
    assert kl.shape == (2,) and torch.all(kl >= 0)
    assert vae.decode(posterior.mode()).shape == x.shape
    with pytest.raises(ValueError):
        vae.encode(torch.zeros(1, 1, 30, 30))


def test_diagonal_gaussian_sample_mode_and_kl():
    moments = torch.cat([torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 4, 4), -1.0)], dim=1)
    dist = DiagonalGaussian(moments)
    assert torch.equal(dist.mode(), dist.mean)
    assert torch.equal(dist.sample(_gen(3)), dist.sample(_gen(3)))
    assert not torch.equal(dist.sample(_gen(3)), dist.sample(_gen(4)))
    expected = 0.5 * (0.25 + torch.exp(torch.tensor(-1.0)) - 1 + 1) * 48
    torch.testing.assert_close(dist.kl(), expected.repeat(2))
    assert torch.equal(DiagonalGaussian(torch.zeros(1, 6, 2, 2)).kl(), torch.zeros(1))


def test_vae_loss_parts_for_both_recon_kinds():
    target = torch.zeros(2, 1, 4, 4)
    recon = torch.full((2, 1, 4, 4), 0.5)
    posterior = DiagonalGaussian(torch.cat([torch.ones(2, 3, 1, 1), torch.zeros(2, 3, 1, 1)], dim=1))
    total, parts = vae_loss(recon, target, posterior, kl_weight=0.1, recon_kind=ReconKind.L1)
    assert parts["recon"].item() == pytest.approx(8.0) and parts["recon_per_pixel"].item() == pytest.approx(0.5)
    assert parts["kl"].item() == pytest.approx(1.5)
    assert total.item() == pytest.approx(8.0 + 0.15)
    _, parts_l2 = vae_loss(recon, target, posterior, recon_kind=ReconKind.L2)
    assert parts_l2["recon"].item() == pytest.approx(4.0)


def test_estimate_scale_factor_is_inverse_std():
    latents = torch.randn(64, 3, 8, 8, generator=_gen(1)) * 5 + 2
    assert estimate_scale_factor(latents) == pytest.approx(0.2, rel=0.03)
    with pytest.raises(ValueError):
        estimate_scale_factor(torch.ones(4, 3, 2, 2))


def test_vae_loss_decreases_with_adam():
    vae = _toy_vae()
    x = torch.rand(4, 1, 16, 16, generator=_gen(2)) * 2 - 1

    def loss_fn():
        recon, posterior = vae(x, generator=_gen(5))
        return vae_loss(recon, x, posterior)[0]

    losses = _adam_losses(vae, loss_fn)
    assert losses[-1] < 0.5 * losses[0]


# -- conditional UNet ----------------------------------------------------------------------


@pytest.mark.parametrize("attention", list(AttentionKind))
@pytest.mark.parametrize("fft_filter", [False, True])
def test_unet_output_shape(attention, fft_filter):
    unet = _toy_unet(channel_mults=(1, 2, 2), attention=attention, fft_filter=fft_filter, window_size=2)
    x_t, cond = torch.randn(2, 3, 16, 16), torch.rand(2, 5, 64, 64)
    assert unet(x_t, torch.tensor([0, 999]), cond).shape == (2, 3, 16, 16)
    assert unet(x_t, 500.5, cond).shape == (2, 3, 16, 16)


def test_unet_out_channels_and_untrained_output_is_zero():
    unet = _toy_unet(out_channels=6)
    out = unet(torch.randn(1, 3, 8, 8), torch.tensor([3]), torch.rand(1, 5, 32, 32))
    assert out.shape == (1, 6, 8, 8) and torch.equal(out, torch.zeros_like(out))


def test_unet_rejects_mismatched_condition():
    unet = _toy_unet()
    with pytest.raises(ValueError, match="condition"):
        unet(torch.randn(1, 3, 8, 8), torch.tensor([3]), torch.rand(1, 5, 16, 16))


def test_condition_reaches_output_and_every_block():
    unet = _toy_unet()
    nn.init.normal_(unet.output[-1].weight, std=0.1)
    x_t = torch.randn(1, 3, 8, 8)
    cond = torch.zeros(1, 5, 32, 32, requires_grad=True)
    out = unet(x_t, torch.tensor([10]), cond)
    out.pow(2).sum().backward()
    tx_grad = cond.grad[0, 1]
    assert tx_grad.abs().min() > 0, "every Tx pixel must influence the prediction"
    blocks = [m for m in unet.core.modules() if m.__class__.__name__ == "ResBlock"]
    assert blocks and all(b.cond_proj is not None for b in blocks)


def test_unet_diffusion_loss_decreases_with_adam():
    unet = _toy_unet()
    schedule = make_schedule(ScheduleKind.LINEAR, 100)
    g = _gen(6)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    cond, t = torch.rand(4, 5, 32, 32, generator=g), torch.tensor([5, 30, 60, 95])
    x_t = q_sample(x0, t, noise, schedule)

    def loss_fn():
        return diffusion_loss(unet(x_t, t, cond), x0, noise, t, schedule, Prediction.EPS)

    losses = _adam_losses(unet, loss_fn)
    assert losses[-1] < 0.6 * losses[0]


# -- attention and Fourier filter ----------------------------------------------------------


def _influence(module: nn.Module, pixel: tuple[int, int]) -> set[tuple[int, int]]:
    """Output pixels that change when one input pixel changes (norm removed, float64)."""
    module.norm = nn.Identity()
    module.double()
    x = torch.randn(1, 16, 8, 8, dtype=torch.float64, generator=_gen(7))
    bumped = x.clone()
    bumped[0, :, pixel[0], pixel[1]] += 1.0
    with torch.no_grad():
        delta = (module(bumped) - module(x)).abs().sum(dim=1)[0]
    return {tuple(p) for p in (delta > 1e-12).nonzero().tolist()}


def _square(rows: range, cols: range) -> set[tuple[int, int]]:
    return {(r, c) for r in rows for c in cols}


def test_window_attention_stays_inside_its_window():
    torch.manual_seed(0)
    plain = WindowAttention(16, window_size=4, shifted=False)
    assert _influence(plain, (0, 0)) == _square(range(4), range(4))
    assert _influence(plain, (5, 2)) == _square(range(4, 8), range(4))


def test_shifted_windows_cross_borders_but_not_map_edges():
    torch.manual_seed(0)
    shifted = WindowAttention(16, window_size=4, shifted=True)
    assert _influence(shifted, (3, 3)) == _square(range(2, 6), range(2, 6))
    # (0, 0) shares a rolled window with the far corner; the mask must keep them apart.
    assert _influence(shifted, (0, 0)) == _square(range(2), range(2))


def test_window_attention_shrinks_window_on_small_maps():
    attention = WindowAttention(16, window_size=8, shifted=True)
    x = torch.randn(2, 16, 4, 4)
    assert attention(x).shape == x.shape
    with pytest.raises(ValueError):
        WindowAttention(16, window_size=4, shifted=False)(torch.randn(1, 16, 6, 8))


@pytest.mark.parametrize("size", [(16, 16), (4, 4), (6, 10)])
def test_fourier_filter_with_unit_response_adds_normalised_input(size):
    module = FourierFilter(8, grid_size=16)
    with torch.no_grad():
        module.weight[0].fill_(1.0)
        module.weight[1].zero_()
    x = torch.randn(2, 8, *size)
    torch.testing.assert_close(module(x), x + module.norm(x), rtol=1e-5, atol=1e-5)


def test_fourier_filter_uses_stored_grid_exactly_at_native_size():
    module = FourierFilter(4, grid_size=8)
    response = module.frequency_response(8, 8)
    stored = torch.fft.ifftshift(module.weight.detach(), dim=-2)
    torch.testing.assert_close(response.real, stored[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(response.imag, stored[1], rtol=0, atol=1e-6)


def test_fourier_filter_under_bfloat16_autocast():
    module = FourierFilter(8)
    x = torch.randn(1, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == x.shape


# -- baseline ------------------------------------------------------------------------------


def test_baseline_maps_condition_to_gain_in_unit_interval():
    torch.manual_seed(0)
    model = SupervisedUNet(in_channels=5, base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1)
    out = model(torch.randn(3, 5, 32, 32) * 10)
    assert out.shape == (3, 1, 32, 32)
    assert out.min() >= 0 and out.max() <= 1


def test_baseline_loss_decreases_with_adam():
    torch.manual_seed(0)
    model = SupervisedUNet(in_channels=5, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
    cond = torch.rand(4, 5, 16, 16, generator=_gen(8))
    target = cond[:, :1] * 0.8

    losses = _adam_losses(model, lambda: (model(cond) - target).pow(2).mean())
    assert losses[-1] < 0.5 * losses[0]


# -- paper profile -------------------------------------------------------------------------


@pytest.mark.slow  # 10 s on an idle 2-core machine, ~20 s when it is shared
def test_paper_profile_forward_on_cpu():
    vae = AutoencoderKL(base_channels=128, channel_mults=(1, 2, 4), num_res_blocks=2).eval()
    unet = ConditionalUNet(
        cond_channels=7, base_channels=128, channel_mults=(1, 2, 4, 4), num_res_blocks=2,
        cond_base_channels=128, attention=AttentionKind.WINDOW, fft_filter=True,
    ).eval()
    with torch.no_grad():
        posterior = vae.encode(torch.rand(1, 1, 256, 256) * 2 - 1)
        latent = posterior.mode()
        assert latent.shape == (1, 3, 64, 64)
        assert vae.decode(latent).shape == (1, 1, 256, 256)
        out = unet(latent, torch.tensor([999]), torch.rand(1, 7, 256, 256))
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
