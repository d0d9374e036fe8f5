"""The condition image's geometric fields: the car shadow cast from the Tx over the vehicles."""

from __future__ import annotations

import numpy as np

from radiodiff.data.conditions import CAR_SHADOW_SCALE_M, car_shadow, channel_names, dynamic_channel_mask, \
    encode_condition
from radiodiff.options import TxEncoding

TX = (32, 4)


def _one_car(size: int = 64) -> np.ndarray:
    """A 2-pixel car (8 m at 4 m per pixel) across row 32, columns 20-21, of a 256 m grid."""
    cars = np.zeros((size, size), np.float32)
    scale = size // 64
    cars[32 * scale:(32 + 1) * scale, 20 * scale:22 * scale] = 1.0
    return cars


def test_no_cars_cast_no_shadow():
    assert not car_shadow(np.zeros((64, 64), np.float32), *TX).any()


def test_the_shadow_lies_behind_the_car_as_seen_from_the_tx():
    shadow = car_shadow(_one_car(), *TX)
    assert shadow[32, 30:60].min() > 0.5  # behind the car, on the Tx's row
    assert not shadow[32, 5:20].any()  # between the Tx and the car
    assert not shadow[10, :].any() and not shadow[:, 2].any()  # off to the side and behind the Tx
    # 8 m of car crossed: 1 - exp(-8 / scale) within the sampling's rounding
    assert abs(shadow[32, 50] - (1 - np.exp(-8 / CAR_SHADOW_SCALE_M))) < 0.08
    assert 0 <= shadow.min() and shadow.max() < 1


def test_more_car_crossed_shades_more():
    one = car_shadow(_one_car(), *TX)
    two_cars = _one_car()
    two_cars[32, 26:28] = 1.0
    two = car_shadow(two_cars, *TX)
    assert two[32, 40:60].min() > one[32, 40:60].max()


def test_the_shadow_means_metres_at_every_resolution():
    coarse = car_shadow(_one_car(64), *TX)
    fine = car_shadow(_one_car(128), TX[0] * 2, TX[1] * 2)
    assert abs(fine[64, 100] - coarse[32, 50]) < 0.1


def test_the_shadow_is_a_dynamic_channel_that_a_static_scene_leaves_zero():
    encodings = (TxEncoding.LOG_DISTANCE, TxEncoding.CAR_SHADOW)
    names = channel_names(encodings)
    assert names[-1] == "car_shadow" and dynamic_channel_mask(encodings)[-1]
    buildings = np.zeros((64, 64), bool)
    with_cars = encode_condition(buildings, _one_car(), *TX, encodings)
    static = encode_condition(buildings, np.zeros((64, 64), np.float32), *TX, encodings)
    assert with_cars.shape == (len(names), 64, 64)
    assert with_cars[-1].max() > 0.5 and not static[-1].any()
    assert np.array_equal(with_cars[:2], static[:2]) and np.array_equal(with_cars[3], static[3])
