"""Our metrics against scikit-image and torchmetrics on random maps, and the Tx-response ratio."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from radiodiff.metrics import car_response_ratio, nmse, psnr, rmse, ssim, summarize, tx_response_ratio


@pytest.fixture
def maps():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(4, 1, 32, 32, generator=generator)
    pred = (target + 0.1 * torch.randn(4, 1, 32, 32, generator=generator)).clamp(0, 1)
    return pred, target


def test_ssim_and_psnr_match_scikit_image(maps):
    pred, target = maps
    for i in range(len(pred)):
        p, t = pred[i, 0].numpy().astype(np.float64), target[i, 0].numpy().astype(np.float64)
        expected = structural_similarity(p, t, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=True)
        assert float(ssim(pred[i : i + 1], target[i : i + 1])) == pytest.approx(expected, abs=1e-6)
        assert float(psnr(pred[i : i + 1], target[i : i + 1])) == pytest.approx(
            peak_signal_noise_ratio(t, p, data_range=1.0), abs=1e-6)


def test_ssim_and_psnr_match_torchmetrics(maps):
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    pred, target = maps
    ours = ssim(pred, target)
    for i in range(len(pred)):
        theirs = tm_ssim(pred[i : i + 1].double(), target[i : i + 1].double(), data_range=1.0)
        # torchmetrics uses biased variances; the two definitions differ by well under 1%.
        assert float(ours[i]) == pytest.approx(float(theirs), rel=1e-2)
        assert float(psnr(pred[i : i + 1], target[i : i + 1])) == pytest.approx(
            float(tm_psnr(pred[i : i + 1], target[i : i + 1], data_range=1.0)), abs=1e-4)


def test_nmse_and_rmse_definitions(maps):
    pred, target = maps
    expected = ((pred - target) ** 2).sum(dim=(1, 2, 3)) / (target**2).sum(dim=(1, 2, 3))
    assert torch.allclose(nmse(pred, target), expected.double(), atol=1e-6)
    assert torch.allclose(rmse(pred, target), ((pred - target) ** 2).mean(dim=(1, 2, 3)).sqrt().double(), atol=1e-6)
    assert float(nmse(target, target).max()) == 0.0
    assert float(ssim(target, target).min()) == pytest.approx(1.0)
    assert set(summarize(pred, target)) == {"nmse", "rmse", "ssim", "psnr"}


def test_tx_response_ratio():
    generator = torch.Generator().manual_seed(1)
    truth = torch.rand(6, 1, 8, 8, generator=generator)
    scenes = [0, 0, 0, 1, 1, 1]
    assert tx_response_ratio(truth, truth, scenes) == pytest.approx(1.0)
    ignores_tx = truth[[0, 0, 0, 3, 3, 3]]  # one map per scene whatever the Tx
    assert tx_response_ratio(ignores_tx, truth, scenes) == pytest.approx(0.0)
    half = 0.5 * truth + 0.5 * truth.mean(dim=0, keepdim=True)
    assert 0.2 < tx_response_ratio(half, truth, scenes) < 0.8
    with pytest.raises(ValueError):
        tx_response_ratio(truth[:2], truth[:2], [0, 1])


def test_car_response_ratio_is_one_on_the_truth_and_zero_for_a_model_that_ignores_cars():
    generator = torch.Generator().manual_seed(2)
    static = torch.rand(4, 1, 8, 8, generator=generator)
    shadow = torch.zeros_like(static)
    shadow[..., 2:4, 3:6] = 0.2  # the cars darken a few pixels of each map
    cars = (static - shadow).clamp(min=0)
    assert car_response_ratio(cars, static, cars, static) == pytest.approx(1.0)
    blind = static + 0.01 * torch.rand(4, 1, 8, 8, generator=generator)  # any map, the same with and without cars
    assert car_response_ratio(blind, blind, cars, static) == 0.0
    assert car_response_ratio(static - shadow / 2, static, cars, static) == pytest.approx(0.5, rel=0.1)
    with pytest.raises(ValueError, match="truth changes"):
        car_response_ratio(cars, static, static, static)


def test_traffic_scores_read_the_second_half_against_the_first():
    from radiodiff.evaluation.methods import MapSet
    from radiodiff.evaluation.scenarios import traffic_scores

    generator = torch.Generator().manual_seed(3)
    static = torch.rand(2, 1, 16, 16, generator=generator)
    cars = static * 0.5
    maps = MapSet(torch.zeros(4, 4, 16, 16), torch.cat([static, cars]), (0, 0, 0, 0))
    truth = traffic_scores(maps.gain, maps)
    assert truth["nmse"] == 0 and truth["car_response"] == pytest.approx(1.0)
    assert truth["tx_response"] == pytest.approx(1.0)
    blind = traffic_scores(torch.cat([static, static]), maps)
    assert blind["car_response"] == 0 and blind["nmse"] > 0


def test_the_autoencoder_ceiling_is_one_for_a_lossless_code_and_zero_for_one_that_drops_the_cars():
    from radiodiff.evaluation.methods import MapSet
    from radiodiff.evaluation.scenarios import autoencoder_car_response

    class Code:
        """encode/decode of `LatentDiffusion`: the gain itself as the latent, or the first map always."""

        device = torch.device("cpu")

        def __init__(self, lossless: bool):
            self.lossless = lossless

        def encode(self, gain):
            return gain.clone() if self.lossless else gain[:1].expand_as(gain).clone()

        def decode(self, latent, buildings):
            return latent * (1 - buildings[:, None])

    generator = torch.Generator().manual_seed(4)
    static = torch.rand(2, 1, 16, 16, generator=generator)
    maps = MapSet(torch.zeros(4, 4, 16, 16), torch.cat([static, static * 0.5]), (0, 0, 1, 1))
    assert autoencoder_car_response(Code(lossless=True), maps) == pytest.approx(1.0)
    assert autoencoder_car_response(Code(lossless=False), maps) == 0.0
