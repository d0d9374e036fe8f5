"""Physics of the dominant-path simulator: laws, shadows, reciprocity, cars, conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radiodiff.data.geometry import load_geometry
from radiodiff.errors import UserError
from radiodiff.sim import CitySimulator, SimParams, db_to_gray, gray_to_db, simulate_map
from radiodiff.sim.corners import convex_corners
from radiodiff.sim.rays import segments_clear

PARAMS = SimParams()


def los_law(distance_m: float) -> float:
    return PARAMS.los_gray_at_1m - PARAMS.los_gray_per_decade * math.log10(math.hypot(distance_m, 0.5))


def corner_law(length_m: float, turn_deg: float) -> float:
    rise = (PARAMS.turn_loss_max - PARAMS.turn_loss_at_0deg) / PARAMS.turn_saturation_deg
    angle_loss = PARAMS.turn_loss_at_0deg + rise * min(turn_deg, PARAMS.turn_saturation_deg)
    return PARAMS.nlos_gray_at_1m - PARAMS.nlos_gray_per_decade * math.log10(length_m) - angle_loss


def l_street(size: int = 64) -> np.ndarray:
    """A street (rows 10-19) along the top, an open square below right of one convex corner.

    Buildings: rows 0-9 everywhere, and the block rows 20+ x cols 0-29. The block's corner
    pixel (20, 29) is the only convex corner; its free diagonal pixel is (19, 30).
    """
    buildings = np.zeros((size, size), bool)
    buildings[:10] = True
    buildings[20:, :30] = True
    return buildings


@pytest.fixture(scope="module")
def street() -> CitySimulator:
    return CitySimulator(l_street())


@pytest.fixture(scope="module")
def city():
    """RadioMapSeer map 1 (static) and its simulator."""
    scene = load_geometry().scene(1)
    return scene, CitySimulator(scene.buildings)


def test_gray_db_mapping():
    assert gray_to_db(np.array([0.0, 255.0])).tolist() == pytest.approx([-147.0, -47.0])
    assert db_to_gray(np.array([-147.0, -100.0])).tolist() == pytest.approx([0.0, 119.85])


def test_line_of_sight_law_along_the_street(street):
    gray = street.gray_float(15, 3)
    for col in (10, 25, 40, 60):
        assert gray[15, col] == pytest.approx(los_law(col - 3), abs=0.05)


def test_corner_law_and_angle_loss_on_l_street(street):
    """Around the one corner: the fitted NLOS law with the turn loss f, in its rising and flat part."""
    assert street.corner_count == 1 and tuple(street.graph.corners[0]) == (19, 30)
    gray = street.gray_float(15, 3)
    tx, corner = np.array([15, 3]), np.array([19, 30])
    for rx in ((38, 46), (55, 35), (60, 60)):
        first, last = corner - tx, np.array(rx) - corner
        turn = math.degrees(abs(math.atan2(last[0], last[1]) - math.atan2(first[0], first[1])))
        expected = corner_law(float(np.hypot(*first) + np.hypot(*last)), turn)
        assert gray[rx] == pytest.approx(expected, abs=0.3), (rx, turn)


def test_shadow_is_darker_than_line_of_sight_at_the_same_distance(street):
    gray = street.gray_float(15, 3)
    shadowed = (50, 32)  # behind the block, 45.5 m from the Tx
    lit = (15, 3 + round(math.dist((15, 3), shadowed)))  # down the street, same distance
    assert gray[shadowed] < gray[lit] - 30


def test_decay_is_monotone_along_a_line_of_sight_ray(city):
    scene, simulator = city
    gray = simulator.gray_float(*scene.tx(0))
    row, col = scene.tx(0)
    run = []
    for step in range(1, 200):  # walk north until the first building
        if row - step < 0 or scene.buildings[row - step, col]:
            break
        run.append(gray[row - step, col])
    assert len(run) > 20
    assert np.all(np.diff(run) < 0)


def test_zero_on_buildings_and_the_tx_brightest(city):
    scene, simulator = city
    row, col = scene.tx(4)
    gray, db = simulator.gain_gray(row, col), simulator.gain_db(row, col)
    assert gray.dtype == np.uint8 and gray.shape == (256, 256)
    assert np.all(gray[scene.buildings] == 0) and np.all(np.isnan(db[scene.buildings]))
    assert gray[row, col] == 255
    assert np.unravel_index(np.nanargmax(db), db.shape) == (row, col)
    assert (gray[~scene.buildings] > 0).mean() > 0.95


def test_field_is_continuous_across_a_shadow_edge(street):
    """Across the corner's shadow boundary the field falls over a few pixels, not in one step."""
    gray = street.gray_float(15, 3)
    column = gray[20:45, 60]  # the boundary from the Tx past the corner crosses column 60 near row 25
    assert column[0] - column[-1] > 25  # a hard LOS/NLOS switch would drop ~20 gray in one pixel
    assert np.abs(np.diff(column)).max() < 8.0


def test_reciprocity_on_a_real_map(city):
    """Swapping Tx and Rx on random free pixels of a real map changes the gray level by < 1.

    The corner search is not exhaustive: on RadioMapSeer maps 0.4-0.7% of random pairs
    differ by 1 to 3 gray, so the test allows 1.5% of its 435 pairs to miss.
    """
    scene, simulator = city
    rng = np.random.default_rng(7)
    free = np.argwhere(~scene.buildings)
    points = [tuple(p) for p in free[rng.choice(len(free), 30, replace=False)]]
    maps = [np.clip(simulator.gray_float(*p), 0, None) for p in points]
    forward, backward, los = [], [], []
    for i, a in enumerate(points):
        for j in range(i + 1, len(points)):
            forward.append(maps[i][points[j]])
            backward.append(maps[j][a])
            los.append(los_law(math.dist(a, points[j])))
    forward, backward = np.array(forward), np.array(backward)
    error = np.abs(forward - backward)
    assert (forward < np.array(los) - 10).mean() > 0.5  # most pairs are shadowed, not easy LOS pairs
    assert np.median(error) < 0.01 and np.quantile(error, 0.95) < 0.5
    assert (error <= 1.0).mean() >= 0.985, np.sort(error)[-8:]


def test_line_of_sight_clipping_a_wall_step_by_a_hair_is_reciprocal(city):
    """Map 1: the line (193, 74)-(222, 77) clips one step of a slanted wall by 0.03 px.

    One end's rays pass the step, the other end's exact test catches it; the clip law of
    `grazing.py` keeps both values at the LOS level (a path round a far corner was 38 gray lower).
    """
    _, simulator = city
    a, b = (193, 74), (222, 77)
    there, back = simulator.gray_float(*a)[b], simulator.gray_float(*b)[a]
    assert there == pytest.approx(back, abs=1.0)
    assert there == pytest.approx(los_law(math.dist(a, b)), abs=1.0)


def test_cars_reduce_the_gain_only_behind_them():
    size = 64
    buildings = np.zeros((size, size), bool)
    cars = np.zeros((size, size), bool)
    cars[29:35, 30:32] = True  # a car 2 m across, 6 m long, east of the Tx
    static = CitySimulator(buildings).gray_float(32, 10)
    with_cars = CitySimulator(buildings, cars=cars).gray_float(32, 10)
    behind, beside = with_cars[32, 45:64] - static[32, 45:64], with_cars[8, :] - static[8, :]
    expected = 2.0 * PARAMS.car_loss_db_per_m * 2.55  # two metres of car
    assert behind == pytest.approx(np.full_like(behind, -expected), abs=1.0)
    assert np.all(beside == 0) and np.all(with_cars[32, :25] == static[32, :25])
    assert np.all(with_cars <= static + 1e-4)
    assert np.isfinite(with_cars[31, 30]) and with_cars[31, 30] > 0  # a car pixel still has a value


def test_deterministic(city):
    scene, simulator = city
    again = CitySimulator(scene.buildings)
    assert np.array_equal(simulator.gain_gray(*scene.tx(9)), again.gain_gray(*scene.tx(9)))


def test_small_maps_and_pixel_size():
    buildings = l_street(64)
    coarse = CitySimulator(buildings, pixel_size_m=4.0).gray_float(15, 3)
    assert coarse[15, 13] == pytest.approx(los_law(40.0), abs=0.1)
    maps = CitySimulator(np.kron(buildings, np.ones((2, 2), bool)), pixel_size_m=2.0).gain_gray(30, 6)
    assert maps.shape == (128, 128) and maps[30, 6] == 255


def test_simulate_map_matches_the_simulator(city):
    scene, simulator = city
    maps = simulate_map(scene, [3, 5], with_cars=False)
    assert maps.shape == (2, 256, 256) and maps.dtype == np.uint8
    assert np.array_equal(maps[1], simulator.gain_gray(*scene.tx(5)))


def test_segment_test_is_symmetric(city):
    scene, _ = city
    rng = np.random.default_rng(3)
    free = np.argwhere(~scene.buildings)
    a, b = free[rng.choice(len(free), 300)], free[rng.choice(len(free), 300)]
    there = [segments_clear(scene.buildings, tuple(p), q[:1], q[1:])[0] for p, q in zip(a, b)]
    back = [segments_clear(scene.buildings, tuple(q), p[:1], p[1:])[0] for p, q in zip(a, b)]
    assert there == back and 0 < sum(there) < len(there)


def test_corners_of_rectangles_and_not_of_staircases():
    rectangle = np.zeros((40, 40), bool)
    rectangle[10:20, 12:30] = True
    assert sorted(map(tuple, convex_corners(rectangle))) == [(9, 11), (9, 30), (20, 11), (20, 30)]
    rows, cols = np.mgrid[:40, :40]
    slanted = rows > cols // 3 + 5  # a wall rising one pixel every three: staircase steps
    assert len(convex_corners(slanted)) == 0


def test_bad_layouts_are_user_errors():
    with pytest.raises(UserError):
        CitySimulator(np.zeros((32, 48), bool))
    with pytest.raises(UserError):
        CitySimulator(np.full((32, 32), 7, np.uint8))
    simulator = CitySimulator(l_street(32))
    with pytest.raises(UserError):
        simulator.gain_gray(25, 5)  # deep inside the block
    with pytest.raises(UserError):
        simulator.gain_gray(40, 3)  # off the map
