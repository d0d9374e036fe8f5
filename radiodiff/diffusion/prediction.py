"""What the network predicts (eps, v, x0, KC or flow) and the conversions between eps, v and x0.

Symbols: x_t = sqrt(ab) * x0 + sqrt(1 - ab) * eps with ab = alpha_bar_t = alphas_cumprod[t];
v = sqrt(ab) * eps - sqrt(1 - ab) * x0 (Salimans & Ho's velocity). KC (RadioDiff's decoupled
objective, `radiodiff.diffusion.decoupled`) and flow matching (`radiodiff.diffusion.flow`) live
on continuous time; the discrete-schedule conversions here refuse them.
"""

from __future__ import annotations

import torch

from radiodiff.diffusion.schedule import NoiseSchedule, as_coefficient, square_root
from radiodiff.options import Prediction


def _require_discrete(prediction: Prediction) -> None:
    if not prediction.on_schedule:
        raise ValueError(
            f"prediction {prediction.value!r} is a continuous-time objective with no discrete-schedule "
            "target; use its process (radiodiff.diffusion.make_process)"
        )


def _signal_noise(t: int | torch.Tensor, schedule: NoiseSchedule, like: torch.Tensor):
    """(sqrt(ab), sqrt(1 - ab)) as tensors broadcastable against `like`."""
    alpha_bar = schedule.alphas_cumprod_at(t)
    return as_coefficient(square_root(alpha_bar), like), as_coefficient(square_root(1.0 - alpha_bar), like)


def prediction_target(
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: int | torch.Tensor,
    schedule: NoiseSchedule,
    prediction: Prediction,
) -> torch.Tensor:
    """What a perfect network outputs for clean x0 [B, ...], noise eps and timesteps t [B].

    Raises ValueError for a continuous-time prediction (KC).
    """
    _require_discrete(prediction)
    if prediction is Prediction.EPS:
        return noise
    if prediction is Prediction.X0:
        return x0
    signal, sigma = _signal_noise(t, schedule, x0)
    return signal * noise - sigma * x0


def split_prediction(
    model_output: torch.Tensor,
    x_t: torch.Tensor,
    t: int | torch.Tensor,
    schedule: NoiseSchedule,
    prediction: Prediction,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a model output [B, ...] at x_t, t into (pred_x0, pred_eps), both in x_t's dtype.

    Exact inverses of q_sample and `prediction_target`; note that recovering x0 from eps
    divides by sqrt(ab), which is small at the noisiest steps. Raises ValueError for a
    continuous-time prediction (KC).
    """
    _require_discrete(prediction)
    out = model_output.to(x_t.dtype)
    signal, sigma = _signal_noise(t, schedule, x_t)
    if prediction is Prediction.EPS:
        return (x_t - sigma * out) / signal, out
    if prediction is Prediction.X0:
        return out, (x_t - signal * out) / sigma
    return signal * x_t - sigma * out, sigma * x_t + signal * out
