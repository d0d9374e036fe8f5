"""Between the 256 m layouts and the model's grid: downsampled targets and masks, upsampled answers."""

from __future__ import annotations

import numpy as np
import pytest

from radiodiff.data.resample import coverage, downsample_gain, majority, upsample_gain


def _layout() -> np.ndarray:
    buildings = np.zeros((64, 64), dtype=bool)
    buildings[8:24, 8:40] = True  # a 16 x 32 block on the 4-pixel grid
    buildings[40:43, 50:53] = True  # a 3 x 3 kiosk: no 4 x 4 block is mostly building
    return buildings


def test_coverage_keeps_cars_that_a_majority_vote_erases():
    cars = np.zeros((64, 64), dtype=bool)
    cars[10:12, 20:25] = True  # a 2 x 5 m car over two 4 m blocks (8 and 2 of their 16 pixels)
    assert not majority(cars, 4).any()
    shares = coverage(cars, 4)
    assert shares.sum() * 16 == pytest.approx(cars.sum()) and shares.max() == pytest.approx(0.5)


def test_free_pixels_average_without_the_walls_zeros():
    buildings = _layout()
    gain = np.where(buildings, 0.0, 0.7).astype(np.float32)
    low = downsample_gain(gain, buildings, 4)
    assert np.allclose(low[~majority(buildings, 4)], 0.7) and (low[majority(buildings, 4)] == 0).all()


def test_upsampling_a_uniform_street_field_stays_uniform_and_buildings_are_exactly_zero():
    buildings = _layout()
    low_buildings = majority(buildings, 4)
    low = np.where(low_buildings, 0.0, 0.6).astype(np.float32)
    full = upsample_gain(low, buildings)
    assert full.shape == (64, 64) and full.dtype == np.float32
    assert (full[buildings] == 0).all()
    # Plain bilinear would darken the street next to the block towards its zeros; the
    # free-weighted one does not.
    assert np.allclose(full[~buildings], 0.6, atol=1e-6)


def test_upsampling_interpolates_between_pixel_centres_and_round_trips_a_smooth_map():
    buildings = np.zeros((64, 64), dtype=bool)
    ramp = np.linspace(0.1, 0.9, 16, dtype=np.float32)
    low = np.tile(ramp, (16, 1))
    full = upsample_gain(low, buildings)
    row = full[30]
    assert np.all(np.diff(row) >= -1e-7) and row[0] == pytest.approx(0.1) and row[-1] == pytest.approx(0.9)
    back = downsample_gain(full, buildings, 4)
    assert np.abs(back - low)[:, 1:-1].max() < 1e-5  # linear inside: the area average is the centre value


def test_a_map_that_does_not_tile_the_layout_is_refused():
    with pytest.raises(ValueError, match="does not tile"):
        upsample_gain(np.zeros((5, 5), np.float32), np.zeros((64, 64), bool))
