"""Per Tx: the value at every pixel through the best last corner that sees it.

For a pixel seen by corner c, each label of c (see `labels.py`) turns towards the pixel
and runs the last leg. Which label is best depends mostly on the outgoing direction (the
turn loss) and a little on the leg length, so per corner and outgoing direction
(`CHOICE_BINS` per turn) the label is chosen by its value after a last leg of
`LAST_LEG_REFERENCE_M`; the pixel's value is then computed exactly for that label. (On
250 shadowed pairs of map 50 this choice moved one value by 0.9 gray against choosing per
pixel, and none by more.) Per corner and direction, three tables (label length, shadow
weight S and S * (G + g) + C) turn the
pass over the corner -> pixel pairs into three gathers, a log and a few products; the
pairs are grouped by corner, so each corner's table rows stay in cache.
"""

from __future__ import annotations

import functools

import numpy as np

from radiodiff.sim.graph import CornerGraph
from radiodiff.sim.labels import CAR_LOSS, LENGTH, TURN_LOSS, TURNING, VALUE, Labels
from radiodiff.sim.model import SimParams, los_and_gap, turn_tables
from radiodiff.sim.rays import DIRECTION_BINS

CHOICE_BINS = 128  # outgoing directions per turn at which a corner's label is chosen (2.8 deg)
LAST_LEG_REFERENCE_M = 20.0  # last-leg length at which the label is chosen


def corner_field(graph: CornerGraph, labels: Labels, size: int, params: SimParams, near_m: float) -> np.ndarray:
    """`[N*N]` float32 gray: best value over last corners per pixel (-inf where none reaches it)."""
    field = np.full(size * size, -np.inf, np.float32)
    if len(graph.pair_corner) == 0:
        return field
    length_table, shadow_table, added_table = _choice_tables(labels, params, near_m)
    length = length_table.take(graph.pair_table)
    length += graph.pair_length
    value, gap = los_and_gap(length, params, near_m)
    gap *= shadow_table.take(graph.pair_table)
    value -= gap
    value -= added_table.take(graph.pair_table)
    if graph.pair_car is not None:
        value -= graph.pair_car
    np.maximum.at(field, graph.pair_pixel, value)
    return field


def _choice_tables(labels: Labels, params: SimParams, near_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`[C * DIRECTION_BINS]` float32 tables of the label chosen per corner and outgoing direction.

    Returns its length (m), S and S * (G + g) + C; an unreached corner gets +inf in the
    last table, so it lights nothing.
    """
    count, slots = labels.direction.shape
    coarse_deg, coarse_gray, fine_deg, fine_gray = _turn_rows(params)
    arrival = labels.direction
    turned = _after_turn(labels.numbers[..., None, :], coarse_deg[arrival], coarse_gray[arrival], params)
    value = _value_at(turned, LAST_LEG_REFERENCE_M, params, near_m)  # [C, K, CHOICE_BINS]
    value[~np.isfinite(labels.numbers[..., VALUE])] = -np.inf
    best, best_value = _best_slot(value)
    chosen = (np.arange(count)[:, None] * slots + best).ravel()
    numbers = labels.numbers.reshape(count * slots, 6).take(chosen, axis=0).reshape(count, CHOICE_BINS, 1, 6)
    rows = labels.direction.ravel().take(chosen) * CHOICE_BINS + np.tile(np.arange(CHOICE_BINS), count)
    shape = (count, CHOICE_BINS, DIRECTION_BINS // CHOICE_BINS)
    turn_deg, turn_gray = (table.take(rows, axis=0).reshape(shape) for table in (fine_deg, fine_gray))
    length, shadow, added = _after_turn(numbers, turn_deg, turn_gray, params)
    added[~np.isfinite(best_value)] = np.inf
    return np.broadcast_to(length, added.shape).ravel(), shadow.ravel(), added.ravel()


@functools.lru_cache(maxsize=8)
def _turn_rows(params: SimParams) -> tuple[np.ndarray, ...]:
    """Turn angle (deg) and g (gray) of a label arriving in direction a, per outgoing direction.

    Coarse `[Q, CHOICE_BINS]` at the centres of the choice bins, and fine `[Q * CHOICE_BINS,
    Q / CHOICE_BINS]` (row a * CHOICE_BINS + j: the directions of choice bin j): looking
    rows up replaces per-element index arithmetic.
    """
    turn_deg, turn_gray = turn_tables(DIRECTION_BINS, params)
    arrival = np.arange(DIRECTION_BINS)[:, None]
    steps = (np.arange(DIRECTION_BINS)[None, :] - arrival) & (DIRECTION_BINS - 1)  # [a, outgoing]
    ratio = DIRECTION_BINS // CHOICE_BINS
    centres = steps[:, ratio // 2 :: ratio]
    fine = steps.reshape(DIRECTION_BINS * CHOICE_BINS, ratio)
    return turn_deg[centres], turn_gray[centres], turn_deg[fine], turn_gray[fine]


def _after_turn(numbers: np.ndarray, turn_deg: np.ndarray, turn_gray: np.ndarray, params: SimParams):
    """Length (m), S and S * (G + g) + C of labels `numbers [..., 6]` after a last turn.

    `turn_deg`/`turn_gray` hold that turn's angle and g; the labels broadcast against
    them. The length keeps the labels' shape (it does not depend on the turn).
    """
    shadow = numbers[..., TURNING] + turn_deg
    shadow *= np.float32(1.0 / params.transition_deg)
    np.minimum(shadow, np.float32(1), out=shadow)
    added = numbers[..., TURN_LOSS] + turn_gray
    added *= shadow
    added += numbers[..., CAR_LOSS]
    return numbers[..., LENGTH], shadow, added


def _value_at(parts, reference_m: float, params: SimParams, near_m: float) -> np.ndarray:
    """The value of the turned labels `parts` (from `_after_turn`) after a last leg of `reference_m`."""
    length, shadow, added = parts  # length varies per label only: the laws are evaluated once per label
    los, gap = los_and_gap(length + np.float32(reference_m), params, near_m)
    value = np.negative(added)
    value += los
    value -= shadow * gap
    return value


def _best_slot(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax and max over axis 1 of `[C, K, B]`: `[C, B]` each, slot by slot (faster than a strided argmax)."""
    best = np.zeros((values.shape[0], values.shape[2]), np.int64)
    best_value = values[:, 0].copy()
    for slot in range(1, values.shape[1]):
        better = values[:, slot] > best_value
        best[better] = slot
        np.maximum(best_value, values[:, slot], out=best_value)
    return best, best_value
