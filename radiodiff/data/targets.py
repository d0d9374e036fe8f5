"""Gain targets for one map: from the simulator, or from a full RadioMapSeer copy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
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
    gain_dir = radiomapseer_gain_dir(root, dynamic=dynamic)
    maps = []
    for tx_id in tx_ids:
        path = gain_dir / f"{map_id}_{tx_id}.png"
        with _open_gray(path) as image:
            maps.append(_decode(image, path))
    return np.stack(maps)


def check_gain_files(root: Path, wanted: Iterable[tuple[int, int]], *, dynamic: bool) -> None:
    """Check the header of every gain PNG `(map_id, tx_id)` in `wanted` before any work: it
    exists, is 8-bit gray and 256 x 256. Reads no pixels, so thousands of files take a second."""
    gain_dir = radiomapseer_gain_dir(root, dynamic=dynamic)
    for map_id, tx_id in wanted:
        with _open_gray(gain_dir / f"{map_id}_{tx_id}.png"):
            pass


@contextlib.contextmanager
def _open_gray(path: Path) -> Iterator:
    """The PIL image at `path`, checked to be an 8-bit gray 256 x 256 PNG; anything else (16-bit,
    colour, another size, not an image) is a UserError, since converting would change the gains."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"missing RadioMapSeer gain map: {path}")
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None
    with image:
        if image.mode != "L":
            raise UserError(f"{path}: image mode {image.mode}, expected an 8-bit gray PNG (mode L)")
        if image.size != (256, 256):
            raise UserError(f"{path}: size {image.size[1]}x{image.size[0]}, expected 256x256")
        yield image


def _decode(image, path: Path) -> np.ndarray:
    try:
        return np.asarray(image)
    except OSError as exc:  # a file cut short: the header was fine, the pixels are not
        raise UserError(f"{path}: not a readable image ({exc})") from None
