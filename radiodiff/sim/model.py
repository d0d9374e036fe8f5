"""Path-loss laws of the dominant path model, in RadioMapSeer gray levels.

Gray <-> dB: gray = 2.55 * (dB + 147), so gray 0 is the -147 dB truncation of RadioMapSeer
and gray 255 is -47 dB (about the free-space gain at 1 m at 5.9 GHz). Values are kept as
float gray internally; `gray_to_db`/`db_to_gray` convert.

The laws below were fitted on RadioMapSeer's WinProp DPM maps (buildings 25 m tall, Tx and
Rx 1.5 m high, so every path runs around buildings). With l the unfolded path length in m:

- line of sight:  LOS(l) = 257.4 - 66.7 log10(l_eff),  l_eff = hypot(l, half a pixel)
  (the clamp makes the Tx pixel the unique maximum and keeps the law finite at l = 0);
- corner paths:   NLOS(l) = 278.6 - 87.3 log10(l_eff) - sum_i f(phi_i),  f rising linearly
  from 4.7 gray at a 0 deg turn to 20.2 gray at 65.6 deg and flat beyond.

Soft shadow edges (our change to the fitted laws). Far from the Tx the two laws differ by
many gray (124 vs 104 at 100 m), so switching between them where a corner starts to hide
the Tx would put a step at every shadow edge, and any tiny asymmetry in the visibility
test would break reciprocity there. Diffraction theory instead has the field fall
continuously over a transition zone around the shadow boundary: the knife-edge parameter
v = theta * sqrt(2 d1 d2 / (lambda (d1 + d2))) reaches 2 (about 20 dB below the lit side)
at theta = 8 deg for legs of 10 m at 5.9 GHz. We use one zone of `transition_deg` = 8 deg
of total turning (Phi = sum phi_i) for every path:

    value(l, Phi, G) = LOS(l) - S(Phi) * (A(l) + G) - C,      S = min(1, Phi / transition)
    A(l) = max(0, LOS(l) - NLOS law without turn loss)       (the LOS/NLOS gap, >= 0)
    G    = sum_i g(phi_i),  g(phi) = f(phi) * min(1, phi / transition)
    C    = car losses (see `car_loss_gray`)

A path that grazes its corners (Phi -> 0) has the LOS value; beyond the zone it follows the
fitted NLOS law exactly (capped by the LOS law below the 10.7 m where the two cross). A
corner passed at a zero angle adds nothing, so the field is also continuous where a path
gains or loses a corner. `value` falls when a path is extended (longer, more turning, more
loss), which lets the corner search settle labels in order. Every term is a function of
the path as a set of legs and turns, so a path and its reverse have the same value:
propagation is reciprocal.

Cars (dynamic setting) are low obstacles, not walls: each metre of car crossed by a
straight leg costs `car_loss_db_per_m` (2.5 dB: about 5 dB for a car crossed across its
2 m width, the mean blockage by vehicles no taller than the antennas in 3GPP TR 37.885),
at most `car_loss_cap_db` per leg (beyond, the wave goes over the roofs). The car mask is
smoothed by a 1 px Gaussian (`rays.padded_grids`), so a leg grazing a car is partly
obstructed, as its Fresnel zone is. Car losses add up over legs; a pixel under a car
still gets a value. `cars=None` is the static setting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

GRAY_PER_DB = 2.55
TRUNCATION_DB = -147.0


@dataclass(frozen=True)
class SimParams:
    """Constants of the propagation model (gray levels unless stated; defaults fitted on DPM maps)."""

    los_gray_at_1m: float = 257.4
    los_gray_per_decade: float = 66.7
    nlos_gray_at_1m: float = 278.6
    nlos_gray_per_decade: float = 87.3
    turn_loss_at_0deg: float = 4.7
    turn_loss_max: float = 20.2
    turn_saturation_deg: float = 65.6
    transition_deg: float = 8.0  # soft shadow zone, in degrees of total turning
    car_loss_db_per_m: float = 2.5
    car_loss_cap_db: float = 10.0

    def __post_init__(self) -> None:
        if self.transition_deg <= 0 or self.turn_saturation_deg <= 0:
            raise ValueError("transition_deg and turn_saturation_deg must be positive")


def gray_to_db(gray: np.ndarray) -> np.ndarray:
    """Path gain in dB from gray levels (float, not truncated)."""
    return np.asarray(gray, np.float32) / np.float32(GRAY_PER_DB) + np.float32(TRUNCATION_DB)


def db_to_gray(db: np.ndarray) -> np.ndarray:
    """Gray levels (float, not clipped) from path gain in dB."""
    return (np.asarray(db, np.float32) - np.float32(TRUNCATION_DB)) * np.float32(GRAY_PER_DB)


def los_and_gap(length_m: np.ndarray, params: SimParams, near_m: float) -> tuple[np.ndarray, np.ndarray]:
    """LOS(l) and A(l) (gray, float32) at unfolded length `length_m` (m); `near_m` is the clamp length."""
    length_m = np.asarray(length_m, np.float32)
    log_length = np.log10(length_m * length_m + np.float32(near_m**2))
    log_length *= np.float32(0.5)
    los = np.float32(params.los_gray_at_1m) - np.float32(params.los_gray_per_decade) * log_length
    log_length *= np.float32(params.nlos_gray_per_decade - params.los_gray_per_decade)
    log_length -= np.float32(params.nlos_gray_at_1m - params.los_gray_at_1m)
    return los, np.maximum(log_length, np.float32(0), out=log_length)


def los_gray(length_m: np.ndarray, params: SimParams, near_m: float) -> np.ndarray:
    """The line-of-sight law at unfolded length `length_m` (m); `near_m` is the clamp length."""
    return los_and_gap(length_m, params, near_m)[0]


def path_gray(length_m, turning_deg, turn_loss, car_loss, params: SimParams, near_m: float) -> np.ndarray:
    """`value(l, Phi, G) - C` of the module docstring, elementwise (gray, float32)."""
    los, gap = los_and_gap(length_m, params, near_m)
    shadow = np.minimum(np.asarray(turning_deg, np.float32) / np.float32(params.transition_deg), np.float32(1))
    return los - shadow * (gap + turn_loss) - car_loss


def turn_loss(turn_deg: np.ndarray, params: SimParams) -> np.ndarray:
    """g(phi): the fitted corner loss f, faded in over the transition zone (gray)."""
    turn_deg = np.asarray(turn_deg, np.float32)
    rise = (params.turn_loss_max - params.turn_loss_at_0deg) / params.turn_saturation_deg
    fitted = params.turn_loss_at_0deg + rise * np.minimum(turn_deg, params.turn_saturation_deg)
    return (fitted * np.minimum(turn_deg / params.transition_deg, 1.0)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def turn_tables(bins: int, params: SimParams) -> tuple[np.ndarray, np.ndarray]:
    """Per wrapped direction difference `0..bins-1`: the turn angle (deg) and g (gray), float32, read-only."""
    steps = np.arange(bins)
    turn_deg = (np.minimum(steps, bins - steps) * (360.0 / bins)).astype(np.float32)
    gray = turn_loss(turn_deg, params)
    turn_deg.setflags(write=False)
    gray.setflags(write=False)
    return turn_deg, gray


def car_loss_gray(car_length_m: np.ndarray, params: SimParams) -> np.ndarray:
    """Loss of one straight leg that crosses `car_length_m` metres of car (gray, capped)."""
    loss_db = np.minimum(np.asarray(car_length_m, np.float32) * params.car_loss_db_per_m, params.car_loss_cap_db)
    return (loss_db * GRAY_PER_DB).astype(np.float32)
