"""Accuracy of radio maps on the [0, 1] gain scale (RadioDiff's definitions), batched in torch.

All functions take `pred`, `target` of shape `[B, 1, H, W]` (or `[B, H, W]`) and return a
per-sample tensor `[B]`, so callers can average, bootstrap or group as they need.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

SSIM_WINDOW = 11  # Gaussian window, sigma 1.5: Wang et al. 2004, skimage's gaussian_weights
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).double()


def nmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised MSE: sum((pred - target)^2) / sum(target^2) per sample, i.e. MSE(pred, gt) / MSE(gt, 0)."""
    error = (_flat(pred) - _flat(target)).pow(2).sum(dim=1)
    return error / _flat(target).pow(2).sum(dim=1).clamp_min(1e-12)


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root mean squared error per sample, in gain units (gray / 255)."""
    return (_flat(pred) - _flat(target)).pow(2).mean(dim=1).sqrt()


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample."""
    mse = (_flat(pred) - _flat(target)).pow(2).mean(dim=1).clamp_min(1e-20)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(device: torch.device) -> torch.Tensor:
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    kernel = kernel / kernel.sum()
    return (kernel[:, None] * kernel[None, :])[None, None]


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per sample: Gaussian 11x11 window (sigma 1.5), valid region only,
    unbiased (N-1) variances, as scikit-image's `structural_similarity(gaussian_weights=True,
    use_sample_covariance=True)`."""
    x = pred.reshape(pred.shape[0], 1, *pred.shape[-2:]).double()
    y = target.reshape(target.shape[0], 1, *target.shape[-2:]).double()
    window = _gaussian_window(x.device)
    filt = lambda image: F.conv2d(image, window)  # noqa: E731
    mu_x, mu_y = filt(x), filt(y)
    n = SSIM_WINDOW * SSIM_WINDOW
    correction = n / (n - 1)
    var_x = (filt(x * x) - mu_x**2) * correction
    var_y = (filt(y * y) - mu_y**2) * correction
    cov = (filt(x * y) - mu_x * mu_y) * correction
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.mean(dim=(1, 2, 3))


def tx_response_ratio(pred: torch.Tensor, target: torch.Tensor, scene_ids: Sequence[int]) -> float:
    """How much predictions move with the Tx, relative to the truth.

    For each scene with at least two Tx: the per-pixel standard deviation across its Tx,
    averaged over pixels, for predictions and for the truth; the ratio pred / truth is
    averaged over scenes. 1 means the model's maps change with the Tx as much as the truth;
    0 means it ignores the Tx.
    """
    ids = torch.as_tensor(list(scene_ids))
    ratios = []
    for scene in ids.unique():
        members = (ids == scene).nonzero().flatten()
        if len(members) < 2:
            continue
        spread_pred = _flat(pred[members]).std(dim=0).mean()
        spread_true = _flat(target[members]).std(dim=0).mean()
        ratios.append(float(spread_pred / spread_true.clamp_min(1e-12)))
    if not ratios:
        raise ValueError("tx_response_ratio needs at least one scene with two or more Tx")
    return float(sum(ratios) / len(ratios))


def car_response_ratio(pred_cars: torch.Tensor, pred_static: torch.Tensor, true_cars: torch.Tensor,
                       true_static: torch.Tensor) -> float:
    """How much predictions move when only the vehicles change, relative to the truth.

    Inputs are pairs `[P, 1, H, W]`: the same map and Tx with and without the cars. The ratio
    is the root-mean-square change of the predictions over that of the truth, pooled over the
    pairs (a single pair's change can be near zero): 1 for the truth itself, 0 for a model
    that ignores the cars.
    """
    change_pred = (_flat(pred_cars) - _flat(pred_static)).pow(2).sum()
    change_true = (_flat(true_cars) - _flat(true_static)).pow(2).sum()
    if not change_true > 0:
        raise ValueError("car_response_ratio needs pairs whose truth changes with the cars")
    return float((change_pred / change_true).sqrt())


def summarize(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean NMSE, RMSE, SSIM and PSNR over a batch."""
    return {
        "nmse": float(nmse(pred, target).mean()),
        "rmse": float(rmse(pred, target).mean()),
        "ssim": float(ssim(pred, target).mean()),
        "psnr": float(psnr(pred, target).mean()),
    }
