"""The shipped RadioMapSeer geometry: 701 city layouts, their cars and 80 Tx sites each.

The published PNGs (256x256, 1 m per pixel) are packed once into one compressed file that
ships inside the package (`radiomapseer_geometry.npz`, about 1.6 MB: bit-packed masks and
int16 Tx pixels). Provenance and the packing command are in `data/radiomapseer/README.md`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiodiff.data.layout import resolve_tx
from radiodiff.errors import UserError
from radiodiff.io import atomic_path

MAP_SIZE = 256  # pixels per side; 1 pixel = 1 m
NUM_MAPS = 701
TX_PER_MAP = 80
GEOMETRY_FILE = Path(__file__).with_name("radiomapseer_geometry.npz")


@dataclass(frozen=True)
class Scene:
    """One city block: `buildings`/`cars` are `[256, 256]` bool, `tx_sites` `[80, 2]` (row, col)."""

    map_id: int
    buildings: np.ndarray
    cars: np.ndarray
    tx_sites: np.ndarray

    def tx(self, tx_id: int) -> tuple[int, int]:
        """The free pixel (row, col) that Tx `tx_id` radiates from (see `layout.resolve_tx`)."""
        if not 0 <= tx_id < len(self.tx_sites):
            raise UserError(f"unknown tx id {tx_id} for map {self.map_id}: expected 0..{len(self.tx_sites) - 1}")
        row, col = (int(v) for v in self.tx_sites[tx_id])
        return resolve_tx(self.buildings, row, col)


@dataclass(frozen=True)
class Geometry:
    """All maps: `buildings`/`cars` `[701, 256, 256]` bool, `tx_sites` `[701, 80, 2]` int16."""

    buildings: np.ndarray
    cars: np.ndarray
    tx_sites: np.ndarray

    def scene(self, map_id: int) -> Scene:
        """The scene of one map id, with a clear error for an id out of range."""
        if not 0 <= map_id < len(self.buildings):
            raise UserError(f"unknown map id {map_id}: RadioMapSeer maps are 0..{len(self.buildings) - 1}")
        return Scene(map_id, self.buildings[map_id], self.cars[map_id], self.tx_sites[map_id])


@functools.lru_cache(maxsize=2)
def load_geometry(path: Path = GEOMETRY_FILE) -> Geometry:
    """Load and validate the packed geometry (about 90 MB unpacked; cached per path)."""
    if not Path(path).is_file():
        raise UserError(f"geometry file not found: {path}")
    try:
        with np.load(path) as packed:
            buildings = np.unpackbits(packed["buildings"], axis=-1).astype(bool)
            cars = np.unpackbits(packed["cars"], axis=-1).astype(bool)
            tx_sites = packed["tx"]
    except (KeyError, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a radiodiff geometry file ({exc})") from None
    geometry = Geometry(buildings, cars, tx_sites)
    _validate(geometry, path)
    return geometry


def _validate(geometry: Geometry, path: Path) -> None:
    n = len(geometry.buildings)
    expected = {"buildings": (n, MAP_SIZE, MAP_SIZE), "cars": (n, MAP_SIZE, MAP_SIZE), "tx_sites": (n, TX_PER_MAP, 2)}
    for name, shape in expected.items():
        if getattr(geometry, name).shape != shape:
            raise UserError(f"{path}: {name} has shape {getattr(geometry, name).shape}, expected {shape}")
    if geometry.tx_sites.min() < 0 or geometry.tx_sites.max() >= MAP_SIZE:
        raise UserError(f"{path}: a Tx site lies outside the {MAP_SIZE}x{MAP_SIZE} map")


def pack_geometry(source_dir: Path, out_path: Path) -> str:
    """Pack a RadioMapSeer geometry folder (`png/buildings_complete`, `png/cars`, `antennas.csv`).

    Returns the SHA-256 of the written file, for the provenance note.
    """
    import pandas as pd

    from radiodiff.data.layout import read_mask_png

    source_dir = Path(source_dir)
    buildings = np.stack([read_mask_png(source_dir / f"png/buildings_complete/{i}.png") for i in range(NUM_MAPS)])
    cars = np.stack([read_mask_png(source_dir / f"png/cars/{i}.png") for i in range(NUM_MAPS)])
    sites = pd.read_csv(source_dir / "antennas.csv").sort_values(["map_id", "tx_id"])
    tx = sites[["row", "col"]].to_numpy().reshape(NUM_MAPS, TX_PER_MAP, 2).astype(np.int16)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, buildings=np.packbits(buildings, axis=-1), cars=np.packbits(cars, axis=-1), tx=tx)
    return hashlib.sha256(Path(out_path).read_bytes()).hexdigest()
