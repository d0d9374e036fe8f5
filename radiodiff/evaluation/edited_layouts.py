"""New layouts at a chosen distance from a banked one: a banked city with some of its buildings
taken away, for the `new_layout` scenario's distance axis.

The test layouts of a small split all lie far from every banked layout (the default profile's
nearest is 0.15 to 0.3 in the embedding's RMS occupancy difference), so they show the cold path
but not the lookup at work. Removing whole buildings from a banked layout gives a layout the
bank has never seen at any distance from it, down to almost none: RadioDiff-Flux's "buildings
changed" case, where reuse must break once enough of the city has changed. The removed share of
the building area is the lever; the distance is measured, not assumed. The truth is the
simulator's map of the edited layout (there is no measured map of a city that does not exist),
made and brought to the model's grid as `prepare` makes its targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from radiodiff.config import SOURCE_MAP_SIZE
from radiodiff.data.conditions import TxEncoding, encode_condition
from radiodiff.data.geometry import load_geometry
from radiodiff.data.resample import downsample_gain, majority
from radiodiff.evaluation.methods import MapSet
from radiodiff.evaluation.scenarios import chosen_layouts, static_rows

EDITED_ID_BASE = 1_000_000  # scene ids of edited layouts: above every RadioMapSeer map id (0..700)


def edited_scene_id(original: int, edit: int) -> int:
    """The scene id of edit `edit` of map `original` (never a real map's id)."""
    return EDITED_ID_BASE + 100 * original + edit


def remove_buildings(buildings: np.ndarray, share: float, seed: Sequence[int] | int) -> np.ndarray:
    """`buildings` `[N, N]` bool without whole buildings (4-connected components: buildings that
    touch only at a corner are two), removed in an order drawn from `seed` until at least `share`
    in [0, 1] of the building area is gone. One seed gives one order, so a larger share removes a
    superset; free pixels stay free, so a Tx placed on the original stays valid."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    labels, count = ndimage.label(buildings)
    if count == 0 or share == 0.0:
        return buildings.copy()
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    order = np.random.default_rng(seed).permutation(count)
    removed = np.cumsum(areas[order])
    taken = order[:int(np.searchsorted(removed, share * areas.sum() - 1e-9)) + 1]
    return buildings & ~np.isin(labels, taken + 1)


def edited_originals(index: pd.DataFrame, scenes: int) -> list[tuple[int, int]]:
    """(map id, Tx id) of the first static sample of `scenes` layouts spread over a split's
    `index` (`scenarios.chosen_layouts`): the banked layouts to edit and the Tx to query them with."""
    rows = static_rows(index, chosen_layouts(index, scenes), 1)
    return [(int(index.loc[row, "map_id"]), int(index.loc[row, "tx_id"])) for row in rows]


def edited_maps(originals: Sequence[tuple[int, int]], shares: Sequence[float], resolution: int,
                encodings: tuple[TxEncoding, ...], seed: int = 0) -> MapSet:
    """One map per (original, share): the layout of RadioMapSeer map `original` with `share` of
    its building area removed (`remove_buildings`, one order per original), its Tx `tx_id`, the
    simulator's static map as the truth. `originals` is a list of (map id, Tx id). Rows are
    ordered by original, then share; scene ids are `edited_scene_id(original, share index)`.
    Conditions `[N, C, H, W]` and gains `[N, 1, H, W]` are at `resolution`, as `prepare` makes them."""
    from radiodiff.sim import CitySimulator

    if SOURCE_MAP_SIZE % resolution:
        raise ValueError(f"resolution {resolution} does not divide the {SOURCE_MAP_SIZE} px source maps")
    factor = SOURCE_MAP_SIZE // resolution
    geometry = load_geometry()
    conds, gains, ids = [], [], []
    for map_id, tx_id in originals:
        scene = geometry.scene(map_id)
        tx_row, tx_col = scene.tx(tx_id)
        for edit, share in enumerate(shares):
            layout = remove_buildings(scene.buildings, share, [seed, map_id])
            gray = CitySimulator(layout).gain_gray(tx_row, tx_col)
            gains.append(downsample_gain(gray.astype(np.float32) / 255.0, layout, factor))
            low = majority(layout, factor)
            conds.append(encode_condition(low, np.zeros(low.shape, np.float32), tx_row // factor, tx_col // factor,
                                          encodings))
            ids.append(edited_scene_id(map_id, edit))
    return MapSet(torch.from_numpy(np.stack(conds)), torch.from_numpy(np.stack(gains))[:, None], tuple(ids))
