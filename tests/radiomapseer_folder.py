"""A RadioMapSeer-format folder that the simulator writes on real layouts, for the tests of
`radiodiff evaluate --radiomapseer` (the layout: radiodiff/evaluation/radiomapseer.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from radiodiff.data.geometry import load_geometry
from radiodiff.sim import CitySimulator


def save_png(path: Path, array) -> None:
    """An 8-bit gray PNG, its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def write_radiomapseer_folder(root: Path, maps: Sequence[int], tx_ids: Sequence[int],
                              cars_maps: Sequence[int] = ()) -> Path:
    """png/buildings_complete, png/cars, gain/DPM of every map and Tx, gain/carsDPM of
    `cars_maps`, and antenna/{map}.json as [x, y] = (column, row), as the published dataset lays
    them out (no png/antennas images: a test adds them where it wants them). Returns `root`."""
    geometry = load_geometry()
    for map_id in maps:
        scene = geometry.scene(map_id)
        save_png(root / "png" / "buildings_complete" / f"{map_id}.png", scene.buildings * 255)
        save_png(root / "png" / "cars" / f"{map_id}.png", scene.cars * 255)
        sites = [[int(col), int(row)] for row, col in scene.tx_sites]
        (root / "antenna").mkdir(parents=True, exist_ok=True)
        (root / "antenna" / f"{map_id}.json").write_text(json.dumps(sites))
        static = CitySimulator(scene.buildings)
        for tx_id in tx_ids:
            save_png(root / "gain" / "DPM" / f"{map_id}_{tx_id}.png", static.gain_gray(*scene.tx(tx_id)))
        if map_id in cars_maps:
            with_cars = CitySimulator(scene.buildings, cars=scene.cars)
            for tx_id in tx_ids:
                save_png(root / "gain" / "carsDPM" / f"{map_id}_{tx_id}.png", with_cars.gain_gray(*scene.tx(tx_id)))
    return root
