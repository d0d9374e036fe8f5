"""RadioDiff's decoupled diffusion ("const SDE" with the KC objective): pure functions and its process.

Forward process on continuous time t in [0, 1], t = 0 the data and t = 1 pure noise:
    x_t = x0 + C t + sqrt(t) n,   C = -x0,   n ~ N(0, I),
i.e. x_t = (1 - t) x0 + W_t with W a standard Brownian motion (W_t = sqrt(t) n): the data
decays linearly to 0 while the noise variance grows linearly to 1. The network has two heads,
C and n; the clean estimate is x0_hat = x_t - C t - sqrt(t) n.

Reverse step t -> t' < t (s = t - t' in RadioDiff's notation). Given x0 and W_t, W_{t'} is a
Brownian bridge, W_{t'} ~ N(t'/t W_t, t'(t - t')/t), so the exact posterior is
    x_{t'} = (1 - t') x0 + (t' / sqrt(t)) n + sqrt(t'(t - t')/t) z,
which for C = -x0 equals RadioDiff's update x_t - C s - (s / sqrt(t)) n + sqrt(s t'/t) z. The step
below plugs x0_hat in for x0, so the raw C head enters only through x0_hat (RadioDiff's sampler
also resets C to -x0_hat before stepping); it lands on x0_hat when t' = 0 whatever the
network, and on x0 exactly for a perfect network. eta in [0, 1] scales the bridge noise: eta = 1 is the
posterior above, eta = 0 the deterministic (DDIM-like) step x_{t'} = (1 - t') x0_hat + sqrt(t') n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from radiodiff.diffusion.continuous import ContinuousTime
from radiodiff.diffusion.losses import weighted_batch_mean
from radiodiff.diffusion.sampling import StepOutput, noise_like
from radiodiff.diffusion.schedule import as_coefficient
from radiodiff.options import Preconditioning

T_MIN = 1e-4  # smallest training time (RadioDiff's eps); keeps n's weight 1/sqrt(t) finite

Heads = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class HeadCoefficients:
    """Float64 skip (a) and output (b) coefficients of both heads, shaped like the times given."""

    skip_c: np.ndarray
    out_c: np.ndarray
    skip_noise: np.ndarray
    out_noise: np.ndarray


def _times(t: float | torch.Tensor) -> np.ndarray:
    """Times as float64 numpy (scalar or [B]), checked to lie in [0, 1]."""
    values = np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float64)
    if np.any(values < 0.0) or np.any(values > 1.0) or np.any(np.isnan(values)):
        raise ValueError(f"times must lie in [0, 1], got {values}")
    return values


def head_coefficients(t: float | torch.Tensor, kind: Preconditioning = Preconditioning.MMSE) -> HeadCoefficients:
    """The preconditioning coefficients at times t (float or [B]): C = a_C x_t + b_C F1,
    n = a_n x_t + b_n F2 for raw heads F = [F1 | F2].

    MMSE (default): a is the best linear estimate of the target from x_t for unit-variance
    data (Var x_t = 1 - t + t^2), b the standard deviation of what remains, so a zero network
    predicts the linear MMSE answer, both heads agree on x0, and F's target has unit variance
    at every t (EDM's rule). RADIODIFF: RadioDiff's published coefficients, kept to reproduce
    it; its C skip (1 - t) x_t has the wrong sign (a zero network predicts C = +x0 as t -> 0)
    and with b_C = t / sqrt(t^2 + 1) the net must output about -2 x0 / t at small t.
    """
    t = _times(t)
    if kind is Preconditioning.RADIODIFF:
        norm = np.sqrt(t**2 + 1.0)
        return HeadCoefficients(skip_c=1.0 - t, out_c=t / norm,
                                skip_noise=np.sqrt(t), out_noise=np.sqrt(1.0 - t) / norm)
    var = 1.0 - t + t**2  # Var(x_t) = (1 - t)^2 + t for unit-variance x0
    return HeadCoefficients(skip_c=-(1.0 - t) / var, out_c=np.sqrt(t / var),
                            skip_noise=np.sqrt(t) / var, out_noise=(1.0 - t) / np.sqrt(var))


def _split_heads(raw: Heads, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(raw, (tuple, list)):
        first, second = raw
    else:
        channels = x_t.shape[1]
        if raw.ndim != x_t.ndim or raw.shape[1] != 2 * channels:
            raise ValueError(f"two-head output {tuple(raw.shape)} must have 2 x {channels} channels like x_t")
        first, second = raw[:, :channels], raw[:, channels:]
    if first.shape != x_t.shape or second.shape != x_t.shape:
        raise ValueError(f"heads {tuple(first.shape)}, {tuple(second.shape)} must match x_t {tuple(x_t.shape)}")
    return first.to(x_t.dtype), second.to(x_t.dtype)


def precondition(raw: Heads, x_t: torch.Tensor, t: float | torch.Tensor,
                 kind: Preconditioning = Preconditioning.MMSE) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw network output -> (C_pred, noise_pred), both shaped and typed like x_t [B, c, h, w].

    raw is [B, 2c, h, w] = [F1 | F2] or the pair (F1, F2); t is a float or [B] in [0, 1].
    Affine in raw, so classifier-free guidance may combine raw outputs.
    """
    f_c, f_noise = _split_heads(raw, x_t)
    co = head_coefficients(t, kind)
    c_pred = as_coefficient(co.skip_c, x_t) * x_t + as_coefficient(co.out_c, x_t) * f_c
    noise_pred = as_coefficient(co.skip_noise, x_t) * x_t + as_coefficient(co.out_noise, x_t) * f_noise
    return c_pred, noise_pred


def q_sample_decoupled(x0: torch.Tensor, t: float | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = x0 + C t + sqrt(t) noise with C = -x0, for x0, noise [B, ...] and t a float or [B].

    Exact at the ends: t = 1 returns the noise, t = 0 the data.
    """
    t = _times(t)
    return as_coefficient(1.0 - t, x0) * x0 + as_coefficient(np.sqrt(t), x0) * noise


def sample_times(batch_size: int, *, generator: torch.Generator, eps: float = T_MIN,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Training times [batch_size] float32, uniform on [eps, 1] (float32 may round up to 1);
    generator on `device`."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    return eps + (1.0 - eps) * torch.rand(batch_size, generator=generator, device=device)


def c_loss_weight(t: torch.Tensor) -> torch.Tensor:
    """Weight of the C head's loss, 2 e^(1 - t): 2e at t = 0, 2 at t = 1 (same shape as t)."""
    return 2.0 * torch.exp(1.0 - t)


def noise_loss_weight(t: torch.Tensor) -> torch.Tensor:
    """Weight of the noise head's loss, e^(sqrt t): 1 at t = 0, e at t = 1 (same shape as t)."""
    return torch.exp(torch.sqrt(t))


def _per_sample(error: torch.Tensor, l1_weight: float) -> torch.Tensor:
    """Mean squared (+ l1_weight * mean absolute) error per sample, [B]."""
    flat = error.flatten(1)
    loss = flat.pow(2).mean(dim=1)
    return loss + l1_weight * flat.abs().mean(dim=1) if l1_weight else loss


def decoupled_loss(c_pred: torch.Tensor, noise_pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor, *, l1_weight: float = 0.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar loss: batch mean of c_loss_weight(t) L(C_pred, -x0) + noise_loss_weight(t) L(n_pred, n).

    Heads and targets [B, ...] (heads already preconditioned), t [B] in [0, 1]; L is the
    per-sample MSE plus l1_weight times the MAE. RadioDiff's "use_l1" is l1_weight = 1 with the
    total halved, a constant factor. `weight` [B]: per-sample weights of the batch mean. At
    least float32.
    """
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must be [{x0.shape[0]}], got {tuple(t.shape)}")
    dtype = torch.promote_types(c_pred.dtype, torch.float32)
    t = t.to(device=x0.device, dtype=dtype)
    loss_c = _per_sample(c_pred.to(dtype) + x0.to(dtype), l1_weight)
    loss_noise = _per_sample(noise_pred.to(dtype) - noise.to(dtype), l1_weight)
    return weighted_batch_mean(c_loss_weight(t) * loss_c + noise_loss_weight(t) * loss_noise, weight)


def decoupled_step(c_pred: torch.Tensor, noise_pred: torch.Tensor, x_t: torch.Tensor, t: float, t_prev: float,
                   *, eta: float = 1.0, generator: torch.Generator | None = None) -> StepOutput:
    """One reverse step x_t -> x_{t_prev} (0 <= t_prev < t <= 1), tensors [B, ...] like x_t.

    pred_x0 = x_t - C t - sqrt(t) n; prev = (1 - t_prev) pred_x0 + sqrt(t_prev - var) n
    + sqrt(var) z with var = eta^2 t_prev (t - t_prev) / t (the Brownian-bridge variance at
    eta = 1). No noise is drawn when var = 0 (t_prev = 0 or eta = 0), so the last step is
    deterministic and returns pred_x0.
    """
    if not 0.0 <= t_prev < t <= 1.0:
        raise ValueError(f"need 0 <= t_prev ({t_prev}) < t ({t}) <= 1")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    c_pred, noise_pred = c_pred.to(x_t.dtype), noise_pred.to(x_t.dtype)
    pred_x0 = x_t - c_pred * t - math.sqrt(t) * noise_pred
    var = eta**2 * t_prev * (t - t_prev) / t
    prev = (1.0 - t_prev) * pred_x0 + math.sqrt(max(t_prev - var, 0.0)) * noise_pred
    if var > 0.0:
        prev = prev + math.sqrt(var) * noise_like(x_t, generator)
    return StepOutput(prev_sample=prev, pred_x0=pred_x0)


@dataclass(frozen=True)
class DecoupledProcess(ContinuousTime):
    """The decoupled (KC) objective as a diffusion process (see `radiodiff.diffusion.process`).

    Time is continuous, 1 = pure noise, 0 = the clean latent. The network has two raw heads
    ([B, 2c, h, w]) that `preconditioning` turns into (C, noise); its time input is t scaled by
    `TIME_EMBEDDING_SCALE`. `eta` scales the bridge noise of each step (0: deterministic).
    `num_train_steps` (T) only reads config times given in steps of T as t / T.
    """

    num_train_steps: int = 1000
    preconditioning: Preconditioning = Preconditioning.MMSE
    eta: float = 0.0

    name = "decoupled"

    def __post_init__(self) -> None:
        if self.num_train_steps < 2:
            raise ValueError(f"num_train_steps must be >= 2, got {self.num_train_steps}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    def output_channels(self, latent_channels: int) -> int:
        """Two heads, C and the noise, each shaped like the latent."""
        return 2 * latent_channels

    def step(self, model_output: torch.Tensor, t: float, t_prev: float, x_t: torch.Tensor, *,
             generator: torch.Generator | None = None) -> StepOutput:
        """Precondition the raw heads, then one `decoupled_step` t -> t_prev."""
        c_pred, noise_pred = precondition(model_output, x_t, t, self.preconditioning)
        return decoupled_step(c_pred, noise_pred, x_t, t, t_prev, eta=self.eta, generator=generator)

    def sample_training_times(self, batch_size: int, *, generator: torch.Generator,
                              device: torch.device | str = "cpu") -> torch.Tensor:
        """Training times `[B]` float32, uniform on [T_MIN, 1]."""
        return sample_times(batch_size, generator=generator, device=device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + sqrt(t) noise."""
        return q_sample_decoupled(x0, t, noise)

    def implied_noise(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise n with x_t = (1 - t) x0 + sqrt(t) n, for times `[B]` in (0, 1]."""
        t = t.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return (x_t - (1.0 - t) * x0) / t.sqrt()

    def times_on_path(self, u: torch.Tensor, t_end: torch.Tensor) -> torch.Tensor:
        """Times uniform on [T_MIN, t_end] for u uniform on [0, 1), all `[B]`."""
        return T_MIN + u * (t_end - T_MIN)

    def training_loss(self, model_output: torch.Tensor, *, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                      x_t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """RadioDiff's weighted two-head loss of the raw output at x_t (scalar, float32),
        per-sample `weight` [B] when given."""
        c_pred, noise_pred = precondition(model_output.float(), x_t, t, self.preconditioning)
        return decoupled_loss(c_pred, noise_pred, x0, noise, t, weight=weight)

    def spec(self) -> dict:
        """What a sampled latent depends on besides the weights, the seed and the time grid."""
        return {"objective": "kc", "preconditioning": self.preconditioning.value, "eta": self.eta}
