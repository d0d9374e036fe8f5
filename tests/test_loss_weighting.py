"""Per-map loss weights: the same interface on every objective, and the energy weighting."""

from __future__ import annotations

import pytest
import torch

from radiodiff.config import DiffusionConfig
from radiodiff.diffusion import make_process
from radiodiff.diffusion.losses import energy_weights
from radiodiff.options import Prediction


@pytest.mark.parametrize("prediction", [Prediction.V, Prediction.EPS, Prediction.KC, Prediction.FLOW])
def test_every_objective_weights_its_samples_the_same_way(prediction):
    process = make_process(DiffusionConfig(num_steps=100, prediction=prediction))
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4, generator=generator)
    t = process.sample_training_times(2, generator=generator)
    x_t = process.add_noise(x0, noise, t)
    output = torch.randn(2, process.output_channels(3), 4, 4, generator=generator)

    def loss(rows, weight=None):
        return process.training_loss(output[rows], x0=x0[rows], noise=noise[rows], t=t[rows], x_t=x_t[rows],
                                     weight=weight)

    both = slice(0, 2)
    torch.testing.assert_close(loss(both, torch.ones(2)), loss(both))
    # weights [2, 0]: the batch mean is the first sample's loss alone
    torch.testing.assert_close(loss(both, torch.tensor([2.0, 0.0])), loss(slice(0, 1)))
    with pytest.raises(ValueError, match="weight must be"):
        loss(both, torch.ones(3))


def test_energy_weights_follow_the_nmse_denominator():
    bright, dark, black = torch.full((1, 1, 4, 4), 0.8), torch.full((1, 1, 4, 4), 0.2), torch.zeros(1, 1, 4, 4)
    weights = energy_weights(torch.cat([bright, dark, black]))
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx(16.0)  # (0.8 / 0.2)^2: the ratio of their energies
    assert torch.isfinite(weights).all() and weights[2] == weights.max()  # an all-dark map: bounded, the heaviest


def test_the_denoiser_loss_weights_maps_by_energy_only_when_asked():
    from radiodiff.options import LossWeighting
    from radiodiff.stages.ldm import denoiser_loss

    process = make_process(DiffusionConfig(num_steps=100, prediction=Prediction.V))
    unet = lambda x_t, t, cond: x_t * 0.5  # noqa: E731  (any function of its input)
    gain = torch.cat([torch.full((1, 1, 8, 8), 0.8), torch.full((1, 1, 8, 8), 0.1)])
    batch = {"latent": torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)), "cond": torch.ones(2, 2, 8, 8),
             "gain": gain}

    def loss(weighting, batch):
        fn = denoiser_loss(process, 0.0, (False, True), weighting)
        return fn(unet, batch, 0, torch.Generator().manual_seed(0))[0]

    assert loss(LossWeighting.ENERGY, batch) != loss(LossWeighting.NONE, batch)
    equal = {**batch, "gain": torch.full((2, 1, 8, 8), 0.5)}  # equal energies: weights of one
    torch.testing.assert_close(loss(LossWeighting.ENERGY, equal), loss(LossWeighting.NONE, equal))


def test_traffic_weights_favour_the_maps_with_cars_and_keep_the_mean():
    from radiodiff.diffusion.losses import TRAFFIC_WEIGHT, traffic_weights

    weights = traffic_weights(torch.tensor([True, False, False, False]))
    assert weights.mean() == pytest.approx(1.0)
    assert weights[0] / weights[1] == pytest.approx(TRAFFIC_WEIGHT)
    torch.testing.assert_close(traffic_weights(torch.tensor([False, False])), torch.ones(2))


def test_the_denoiser_loss_weights_maps_with_cars_only_when_asked():
    from radiodiff.options import LossWeighting
    from radiodiff.stages.ldm import denoiser_loss

    process = make_process(DiffusionConfig(num_steps=100, prediction=Prediction.V))
    unet = lambda x_t, t, cond: x_t * 0.5  # noqa: E731  (any function of its input)
    batch = {"latent": torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)),
             "cond": torch.ones(2, 2, 8, 8), "gain": torch.full((2, 1, 8, 8), 0.5), "cars": torch.tensor([True, False])}

    def loss(weighting, batch):
        fn = denoiser_loss(process, 0.0, (False, True), weighting)
        return fn(unet, batch, 0, torch.Generator().manual_seed(0))[0]

    assert loss(LossWeighting.TRAFFIC, batch) != loss(LossWeighting.NONE, batch)
    static = {**batch, "cars": torch.tensor([False, False])}
    torch.testing.assert_close(loss(LossWeighting.TRAFFIC, static), loss(LossWeighting.NONE, static))


@pytest.mark.parametrize("prediction", [Prediction.EPS, Prediction.V, Prediction.X0])
def test_min_snr_weights_make_every_schedule_objective_weigh_its_x0_error_by_min_snr(prediction):
    from radiodiff.diffusion.losses import MIN_SNR_GAMMA, min_snr_weights
    from radiodiff.diffusion.prediction import prediction_target

    process = make_process(DiffusionConfig(num_steps=1000, prediction=prediction))
    t = torch.tensor([0, 50, 200, 500, 999])
    alpha_bar = process.schedule.alphas_cumprod_at(t)
    snr = alpha_bar / (1 - alpha_bar)
    weights = min_snr_weights(alpha_bar, prediction)
    # The objective's plain loss weighs the x0 error by |d target / d x0 at fixed x_t|^2: measure it
    # by moving x0 and the noise along the same x_t, then apply the weights.
    x0, noise = torch.zeros(5, 1, 1, 1, dtype=torch.float64), torch.zeros(5, 1, 1, 1, dtype=torch.float64)
    a, s = alpha_bar.sqrt().view(5, 1, 1, 1), (1 - alpha_bar).sqrt().view(5, 1, 1, 1)
    moved_x0, moved_noise = x0 + 1.0, noise - a / s  # sqrt(ab) x0 + sqrt(1 - ab) noise unchanged
    change = prediction_target(moved_x0, moved_noise, t, process.schedule, prediction) - \
        prediction_target(x0, noise, t, process.schedule, prediction)
    own = change.flatten().pow(2)
    torch.testing.assert_close(weights.double() * own, snr.clamp(max=MIN_SNR_GAMMA), rtol=1e-4, atol=1e-9)
    assert weights[-1] < 1e-3 if prediction is not Prediction.EPS else weights[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("prediction", [Prediction.KC, Prediction.FLOW])
def test_min_snr_is_refused_off_a_noise_schedule_and_dropped_for_the_alternatives(prediction):
    from dataclasses import replace

    from radiodiff.config import LDMConfig, AlternativeObjectivesConfig
    from radiodiff.diffusion.losses import min_snr_weights
    from radiodiff.options import LossWeighting
    from radiodiff.stages.ldm import denoiser_loss

    with pytest.raises(ValueError, match="noise schedule"):
        min_snr_weights(torch.tensor([0.5]), prediction)
    with pytest.raises(ValueError, match="min_snr"):
        denoiser_loss(make_process(DiffusionConfig(num_steps=100, prediction=prediction)), 0.0, (False,),
                      LossWeighting.MIN_SNR)
    with pytest.raises(ValueError, match="min_snr needs prediction"):
        LDMConfig(diffusion=DiffusionConfig(prediction=prediction), loss_weighting=LossWeighting.MIN_SNR)
    served = LDMConfig(loss_weighting=LossWeighting.MIN_SNR)
    derived = AlternativeObjectivesConfig(predictions=(prediction,)).derive(served)[prediction]
    assert derived.loss_weighting is LossWeighting.NONE and derived.diffusion.prediction is prediction
    assert replace(served, sample_steps=3).loss_weighting is LossWeighting.MIN_SNR


def test_the_denoiser_loss_weighs_draws_by_min_snr_only_when_asked():
    from radiodiff.options import LossWeighting
    from radiodiff.stages.ldm import denoiser_loss

    process = make_process(DiffusionConfig(num_steps=1000, prediction=Prediction.V))
    unet = lambda x_t, t, cond: x_t * 0.5  # noqa: E731  (any function of its input)
    batch = {"latent": torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(1)),
             "cond": torch.ones(4, 2, 8, 8), "gain": torch.full((4, 1, 8, 8), 0.5)}

    def loss(weighting):
        return denoiser_loss(process, 0.0, (False, True), weighting)(unet, batch, 0, torch.Generator().manual_seed(0))[0]

    assert torch.isfinite(loss(LossWeighting.MIN_SNR)) and loss(LossWeighting.MIN_SNR) != loss(LossWeighting.NONE)
