"""Gain targets for one map: from the simulator, or from a full RadioMapSeer copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radiodiff.data.geometry import Scene
from radiodiff.errors import UserError


def simulated_gray(scene: Scene, tx_pixels: list[tuple[int, int]], *, dynamic: bool) -> np.ndarray:
    """Simulated gain of each Tx, `[K, 256, 256]` uint8 gray (RadioMapSeer convention).

    The per-city setup (corners, visibility) is done once and shared by the K Tx.
    """
    from radiodiff.sim import CitySimulator

    simulator = CitySimulator(scene.buildings, cars=scene.cars if dynamic else None)
    return np.stack([simulator.gain_gray(row, col) for row, col in tx_pixels])


def radiomapseer_gain_dir(root: Path, *, dynamic: bool) -> Path:
    """The folder of DPM gain PNGs (`gain/DPM` or `gain/carsDPM`) of a full RadioMapSeer copy."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"RadioMapSeer folder not found: {root}")
    gain_dir = root / "gain" / ("carsDPM" if dynamic else "DPM")
    if not gain_dir.is_dir():
        raise UserError(f"{root}: no {gain_dir.relative_to(root)} folder: is this a full RadioMapSeer copy?")
    return gain_dir


def radiomapseer_gray(root: Path, map_id: int, tx_ids: list[int], *, dynamic: bool) -> np.ndarray:
    """Real RadioMapSeer DPM gains `{map}_{tx}.png`, `[K, 256, 256]` uint8 gray."""
    from PIL import Image

    gain_dir = radiomapseer_gain_dir(root, dynamic=dynamic)
    maps = []
    for tx_id in tx_ids:
        path = gain_dir / f"{map_id}_{tx_id}.png"
        if not path.is_file():
            raise UserError(f"missing RadioMapSeer gain map: {path}")
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"))
        if gray.shape != (256, 256):
            raise UserError(f"{path}: shape {gray.shape}, expected 256x256")
        maps.append(gray)
    return np.stack(maps)
