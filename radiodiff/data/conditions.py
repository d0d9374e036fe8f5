"""The condition image: the scene's layout plus geometric encodings of the Tx.

A one-hot Tx pixel alone was ignored by small CPU-trained models here (their predictions
barely moved with the Tx), so the Tx also reaches the network as smooth fields computed
from the inputs alone: log-distance, a Gaussian blob, a line-of-sight mask by ray casting
over the buildings, and LOS x log-distance. None of them uses the propagation simulator.

Channel order: `[buildings, tx, cars, *encodings]`. Every channel but `buildings` is
dynamic: the static condition (the midpoint bank's stage 1) zeroes them.
"""

from __future__ import annotations

import numpy as np

from radiodiff.config import SOURCE_MAP_SIZE
from radiodiff.options import TxEncoding

BASE_CHANNELS = ("buildings", "tx", "cars")
BLOB_SIGMA_PX = 2.0  # width of the Gaussian Tx blob, in pixels
MAP_SIDE_M = float(SOURCE_MAP_SIZE)  # a RadioMapSeer layout spans 256 m at 1 m per pixel
# The car shadow saturates as 1 - exp(-metres / this): one car crossed lengthwise (4-5 m)
# reads about 0.6, two about 0.9. Car losses saturate too: past a few cars the wave goes over
# their roofs rather than through them.
CAR_SHADOW_SCALE_M = 5.0
_SHADOW_ROW_BLOCK = 16  # rows per pass, so a 256 x 256 grid needs tens of MB, not a GB


def channel_names(encodings: tuple[TxEncoding, ...]) -> tuple[str, ...]:
    """Names of the condition channels, in order."""
    return BASE_CHANNELS + tuple(e.value for e in encodings)


def dynamic_channel_mask(encodings: tuple[TxEncoding, ...]) -> tuple[bool, ...]:
    """True for the channels the static condition zeroes (everything but the buildings)."""
    return tuple(name != "buildings" for name in channel_names(encodings))


def line_of_sight(buildings: np.ndarray, tx_row: int, tx_col: int) -> np.ndarray:
    """`[H, W]` bool: pixels whose straight segment to the Tx crosses no building pixel.

    The segment is sampled at twice the pixel density (nearest pixel); a building pixel at
    the far end counts as seen (its wall faces the Tx), so the mask is about the path.
    """
    height, width = buildings.shape
    rows, cols = np.mgrid[0:height, 0:width]
    samples = 2 * max(height, width)
    fractions = (np.arange(1, samples) / samples)[:, None, None]
    sample_rows = np.rint(tx_row + fractions * (rows - tx_row)).astype(np.intp)
    sample_cols = np.rint(tx_col + fractions * (cols - tx_col)).astype(np.intp)
    hit = buildings[sample_rows, sample_cols]
    # A sample that rounds onto the end pixel itself is not an obstacle on the way there.
    hit &= (sample_rows != rows) | (sample_cols != cols)
    return ~hit.any(axis=0)


def car_shadow(cars: np.ndarray, tx_row: int, tx_col: int) -> np.ndarray:
    """`[H, W]` float32 in [0, 1): 1 - exp(-m / CAR_SHADOW_SCALE_M), m the metres of car on the
    straight segment from the Tx to each pixel (`cars` `[H, W]`: coverage in [0, 1] per pixel;
    the grid spans `MAP_SIDE_M`, so the field means the same at every resolution).

    The segment is sampled once per pixel step along its longer axis (nearest pixel), the end
    pixel left out as in `line_of_sight`: a car parked on a pixel does not shade that pixel's
    own path. All zero when there are no cars, without sampling.
    """
    height, width = cars.shape
    shadow = np.zeros((height, width), np.float32)
    if not np.any(cars):
        return shadow
    coverage = np.asarray(cars, np.float32)
    samples = max(height, width)
    fractions = (np.arange(1, samples, dtype=np.float32) / samples)[:, None, None]
    metres_per_pixel = MAP_SIDE_M / max(height, width)
    cols = np.arange(width, dtype=np.float32)[None, :]
    for start in range(0, height, _SHADOW_ROW_BLOCK):
        rows = np.arange(start, min(start + _SHADOW_ROW_BLOCK, height), dtype=np.float32)[:, None]
        sample_rows = np.rint(tx_row + fractions * (rows - tx_row)).astype(np.intp)
        sample_cols = np.rint(tx_col + fractions * (cols - tx_col)).astype(np.intp)
        crossed = coverage[sample_rows, sample_cols]
        crossed *= (sample_rows != rows.astype(np.intp)) | (sample_cols != cols.astype(np.intp))
        step_m = np.hypot(rows - tx_row, cols - tx_col) * metres_per_pixel / samples
        shadow[start:start + len(rows)] = crossed.sum(axis=0) * step_m
    return (1.0 - np.exp(-shadow / CAR_SHADOW_SCALE_M)).astype(np.float32)


def encode_condition(
    buildings: np.ndarray,
    cars: np.ndarray,
    tx_row: int,
    tx_col: int,
    encodings: tuple[TxEncoding, ...],
    los: np.ndarray | None = None,
) -> np.ndarray:
    """The condition image `[3 + len(encodings), H, W]` float32 in [0, 1] for one sample:
    `buildings` `[H, W]` bool, `cars` `[H, W]` bool or float coverage in [0, 1].

    `los` may pass a precomputed `line_of_sight` mask (the dataset stores one per sample).
    """
    height, width = buildings.shape
    rows, cols = np.mgrid[0:height, 0:width]
    distance = np.hypot(rows - tx_row, cols - tx_col)  # pixels
    tx = np.zeros((height, width), np.float32)
    tx[tx_row, tx_col] = 1.0
    channels = [buildings.astype(np.float32), tx, cars.astype(np.float32)]
    log_distance = 1.0 - np.log10(np.maximum(distance, 1.0)) / np.log10(np.hypot(height, width))
    if los is None and _needs_los(encodings):
        los = line_of_sight(buildings, tx_row, tx_col)
    for encoding in encodings:
        if encoding is TxEncoding.LOG_DISTANCE:
            channels.append(log_distance)
        elif encoding is TxEncoding.BLOB:
            channels.append(np.exp(-(distance**2) / (2 * BLOB_SIGMA_PX**2)))
        elif encoding is TxEncoding.LOS:
            channels.append(los)
        elif encoding is TxEncoding.LOS_LOG_DISTANCE:
            channels.append(los * log_distance)
        elif encoding is TxEncoding.CAR_SHADOW:
            channels.append(car_shadow(cars, tx_row, tx_col))
    return np.stack(channels).astype(np.float32)


def _needs_los(encodings: tuple[TxEncoding, ...]) -> bool:
    return TxEncoding.LOS in encodings or TxEncoding.LOS_LOG_DISTANCE in encodings
