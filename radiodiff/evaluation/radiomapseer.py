"""Scoring on a RadioMapSeer-format folder: real (or any DPM-convention) gain maps of layouts
the pipeline may never have seen, resized to the model's grid exactly as `prepare` does.

The folder, as the published dataset lays it out:

    png/buildings_complete/{map}.png   256 x 256, 255 = building
    png/cars/{map}.png                 256 x 256, 255 = car (read with gain/carsDPM)
    gain/DPM/{map}_{tx}.png            8-bit gray gain, static scene
    gain/carsDPM/{map}_{tx}.png        the same with the cars as obstacles
    png/antennas/{map}_{tx}.png        256 x 256, the Tx pixel lit (the published loaders' Tx input)
    antenna/{map}.json                 the map's Tx sites, one [x, y] pair (column, row) per Tx id
    (or antennas.csv                   map_id,tx_id,row,col, as ../shared's geometry copy has it)

A sample is one gain file: its map's layout and its Tx, read from the Tx's antenna image where
the folder has one (it cannot be read in the wrong coordinate order), else at index `tx` of the
map's antenna list.
Targets are area-averaged over free pixels to the model's resolution (`downsample_gain`),
layouts majority-pooled, cars as pixel coverage, the Tx snapped as a query would be
(`serve.prepare_query`). NMSE is RadioDiff's per-map MSE(pred, gt) / MSE(gt, 0), over all
pixels and over the free (non-building) pixels only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiodiff.data.layout import read_gray_png, read_mask_png
from radiodiff.data.resample import downsample_gain
from radiodiff.data.split import radiounet_split
from radiodiff.data.targets import radiomapseer_gray
from radiodiff.errors import UserError
from radiodiff.options import SPLITS
from radiodiff.progress import Progress
from radiodiff.serve import Query, prepare_query

GAIN_FOLDERS = ("DPM", "carsDPM")
ANTENNA_ORDERS = ("xy", "rowcol")  # [x, y] = (column, row) as image coordinates, or (row, column)
_GAIN_NAME = re.compile(r"^(\d+)_(\d+)\.png$")


@dataclass(frozen=True)
class Sample:
    """One scored map: ids, the Tx pixel at 256 x 256 (row, col) and the query at the model's grid."""

    map_id: int
    tx_id: int
    tx_256: tuple[int, int]
    query: Query


@dataclass(frozen=True)
class RealMaps:
    """The samples of a folder and their targets `[N, H, W]` float32 in [0, 1] at the model's grid;
    `layouts_256` / `cars_256` per map id (bool `[256, 256]`, cars all False for DPM)."""

    samples: tuple[Sample, ...]
    targets: np.ndarray
    layouts_256: dict[int, np.ndarray]
    cars_256: dict[int, np.ndarray]
    gain_folder: str


def choose_gain_folder(root: Path, wanted: str | None) -> str:
    """`wanted` if given and present, else DPM when the folder has it, else carsDPM."""
    _check_root(root)
    present = [name for name in GAIN_FOLDERS if (root / "gain" / name).is_dir()]
    if wanted is not None:
        if wanted not in GAIN_FOLDERS:
            raise UserError(f"gain folder must be one of {', '.join(GAIN_FOLDERS)}, got {wanted}")
        if wanted not in present:
            raise UserError(f"{root}: no gain/{wanted} folder (found: {', '.join(present) or 'none'})")
        return wanted
    if not present:
        raise UserError(f"{root}: no gain/DPM or gain/carsDPM folder: not a RadioMapSeer-format folder")
    return present[0]


def find_samples(root: Path, gain_folder: str, maps: Sequence[int] | None, tx_per_map: int | None,
                 split: str | None = None) -> list[tuple[int, list[int]]]:
    """(map id, Tx ids) to score: every gain file of `gain_folder` (numerically ordered), of
    `maps` when given, else of the folder's maps in RadioUNet's `split` when given, at most
    `tx_per_map` Tx per map (the lowest ids)."""
    by_map: dict[int, list[int]] = {}
    for path in (root / "gain" / gain_folder).iterdir():
        match = _GAIN_NAME.match(path.name)
        if match:
            by_map.setdefault(int(match[1]), []).append(int(match[2]))
    if maps is not None:
        absent = [m for m in maps if m not in by_map]
        if absent:
            raise UserError(f"{root}/gain/{gain_folder}: no gain maps of map(s) {', '.join(map(str, absent))}")
        by_map = {m: by_map[m] for m in maps}
    elif split is not None:
        if split not in SPLITS:
            raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split}")
        in_split = {int(m) for m in radiounet_split()[split]}
        by_map = {m: tx for m, tx in by_map.items() if m in in_split}
        if not by_map:
            raise UserError(f"{root}/gain/{gain_folder}: no gain maps of the {len(in_split)} maps of RadioUNet's "
                            f"{split} split")
    if not by_map:
        raise UserError(f"{root}/gain/{gain_folder}: no gain maps named {{map}}_{{tx}}.png")
    return [(m, sorted(tx)[:tx_per_map]) for m, tx in sorted(by_map.items())]


def read_tx_sites(root: Path, map_id: int, tx_ids: Sequence[int], order: str
                  ) -> list[tuple[tuple[int, int], Path | None]]:
    """(row, col) at 256 x 256 of each Tx of `tx_ids`, with the antenna image it was read from:
    `png/antennas/{map}_{tx}.png` where the folder has it, else the map's site list
    (`read_antennas`, image None). The list is read only when some Tx has no image."""
    sites: list[tuple[tuple[int, int], Path | None]] = []
    listed: np.ndarray | None = None
    for tx_id in tx_ids:
        image_path = root / "png" / "antennas" / f"{map_id}_{tx_id}.png"
        if image_path.is_file():
            sites.append((read_tx_image(image_path), image_path))
            continue
        if listed is None:
            listed = read_antennas(root, map_id, order)
        if tx_id >= len(listed):
            raise UserError(f"{root}: map {map_id} has {len(listed)} Tx sites, the gain map names Tx {tx_id}")
        sites.append(((int(listed[tx_id, 0]), int(listed[tx_id, 1])), None))
    return sites


def read_tx_image(path: Path) -> tuple[int, int]:
    """The Tx pixel (row, col) of an antenna image: 256 x 256, 0 but at the transmitter. Should an
    image mark the site with more than one pixel, the centre of its brightest pixels."""
    array = read_gray_png(path).astype(np.float64)
    if array.shape != (256, 256):
        raise UserError(f"{path}: expected a 256 x 256 antenna image, got {'x'.join(map(str, array.shape))}")
    peak = array.max()
    if not peak > 0:
        raise UserError(f"{path}: no Tx pixel (the image is all 0)")
    rows, cols = np.nonzero(array == peak)
    return int(np.rint(rows.mean())), int(np.rint(cols.mean()))


def read_antennas(root: Path, map_id: int, order: str) -> np.ndarray:
    """Tx sites of `map_id` `[K, 2]` int (row, col) at 256 x 256, indexed by Tx id: from
    `antenna/{map}.json` (pairs in `order`), else from `antennas.csv` (row, col columns)."""
    path = root / "antenna" / f"{map_id}.json"
    if path.is_file():
        try:
            sites = np.asarray(json.loads(path.read_text()), dtype=float)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as exc:
            raise UserError(f"{path}: not a JSON list of [x, y] pairs ({exc})") from None
        if sites.ndim != 2 or sites.shape[1] != 2 or not np.isfinite(sites).all():
            raise UserError(f"{path}: expected a list of [x, y] pairs, got shape {sites.shape}")
        pixels = np.rint(sites).astype(np.int64)
        pixels = pixels[:, ::-1] if order == "xy" else pixels
    elif (root / "antennas.csv").is_file():
        path = root / "antennas.csv"
        pixels = _csv_sites(path, map_id)
    else:
        raise UserError(f"missing Tx sites: {path} (nor an antennas.csv, nor png/antennas images in {root})")
    if len(pixels) and (pixels.min() < 0 or pixels.max() > 255):
        raise UserError(f"{path}: Tx coordinates of map {map_id} outside the 256 x 256 map")
    return pixels


def _csv_sites(path: Path, map_id: int) -> np.ndarray:
    """(row, col) `[K, 2]` of `map_id` from a `map_id,tx_id,row,col` table, row k = Tx id k."""
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(f"{path}: not a CSV table ({exc})") from None
    missing = {"map_id", "tx_id", "row", "col"} - set(table.columns)
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    rows = table[table["map_id"] == map_id].sort_values("tx_id")
    if not np.array_equal(rows["tx_id"].to_numpy(), np.arange(len(rows))):
        raise UserError(f"{path}: the Tx ids of map {map_id} are not 0..K-1")
    return rows[["row", "col"]].to_numpy().astype(np.int64)


def load_real_maps(root: Path, resolution: int, *, maps: Sequence[int] | None = None, tx_per_map: int | None = None,
                   split: str | None = None, gain_folder: str | None = None, antenna_order: str = "xy",
                   progress: bool = True) -> RealMaps:
    """Read and resize every sample of the folder (`find_samples` chooses them; see the module
    docstring), with a status line per map read on stderr when `progress`; every defect is a
    one-line `UserError` naming the file."""
    root = Path(root)
    folder = choose_gain_folder(root, gain_folder)
    if antenna_order not in ANTENNA_ORDERS:
        raise UserError(f"antenna order must be one of {', '.join(ANTENNA_ORDERS)}, got {antenna_order}")
    samples: list[Sample] = []
    targets: list[np.ndarray] = []
    layouts, cars_by_map = {}, {}
    chosen = find_samples(root, folder, maps, tx_per_map, split)
    with Progress(len(chosen), "evaluate: reading", unit="map", enabled=progress) as bar:
        for map_id, tx_ids in chosen:
            map_samples, map_targets, layouts[map_id], cars_by_map[map_id] = _read_map(
                root, folder, map_id, tx_ids, antenna_order, resolution)
            samples += map_samples
            targets += map_targets
            bar.update()
    return RealMaps(tuple(samples), np.stack(targets), layouts, cars_by_map, folder)


def _read_map(root: Path, folder: str, map_id: int, tx_ids: list[int], antenna_order: str, resolution: int
              ) -> tuple[list[Sample], list[np.ndarray], np.ndarray, np.ndarray]:
    """One map's samples and targets `[H, W]` at the model's grid, its layout and its cars
    (bool `[256, 256]`, all False for DPM)."""
    dynamic = folder == "carsDPM"
    buildings = read_mask_png(root / "png" / "buildings_complete" / f"{map_id}.png")
    cars = read_mask_png(root / "png" / "cars" / f"{map_id}.png") if dynamic else np.zeros_like(buildings)
    samples, targets = [], []
    sites = read_tx_sites(root, map_id, tx_ids, antenna_order)
    for tx_id, image, (tx, image_path) in zip(tx_ids, radiomapseer_gray(root, map_id, tx_ids, dynamic=dynamic), sites):
        _check_tx_is_brightest(image, buildings, tx, root / "gain" / folder / f"{map_id}_{tx_id}.png", image_path,
                               antenna_order)
        samples.append(Sample(map_id, tx_id, tx, prepare_query(buildings, tx, cars if dynamic else None, resolution)))
        targets.append(downsample_gain(image.astype(np.float32) / 255.0, buildings, 256 // resolution))
    return samples, targets, buildings, cars


def _check_tx_is_brightest(gray: np.ndarray, buildings: np.ndarray, tx: tuple[int, int], path: Path,
                           image_path: Path | None, order: str) -> None:
    """The gain peaks at the transmitter: a Tx read in the wrong coordinate order (or from
    another Tx's image) lands on a dim pixel, and scoring it would be meaningless. Checked
    within 2 px of the site."""
    row, col = tx
    near = gray[max(row - 2, 0):row + 3, max(col - 2, 0):col + 3]
    free = gray[~buildings]
    if free.size and near.max() < np.percentile(free, 99):
        if image_path is not None:
            raise UserError(f"{path}: the gain does not peak at the Tx site {tx} (row, col) of {image_path}")
        other = "rowcol" if order == "xy" else "xy"
        raise UserError(f"{path}: the gain does not peak at the Tx site {tx} (row, col) read from antenna/ in "
                        f"order {order}; if the sites are written the other way round, pass --antenna-order {other}")


def score_maps(pred: np.ndarray, target: np.ndarray, buildings: np.ndarray) -> dict[str, float]:
    """Mean NMSE and RMSE over maps `[N, H, W]` in [0, 1], over all pixels and over the free
    pixels only (`buildings` `[N, H, W]` bool at the same grid)."""
    pred, target = pred.astype(np.float64), target.astype(np.float64)
    error = (pred - target) ** 2
    free = ~buildings
    all_nmse = error.sum(axis=(1, 2)) / np.maximum((target ** 2).sum(axis=(1, 2)), 1e-12)
    free_nmse = (error * free).sum(axis=(1, 2)) / np.maximum((target ** 2 * free).sum(axis=(1, 2)), 1e-12)
    all_rmse = np.sqrt(error.mean(axis=(1, 2)))
    free_rmse = np.sqrt((error * free).sum(axis=(1, 2)) / np.maximum(free.sum(axis=(1, 2)), 1))
    return {"nmse": float(all_nmse.mean()), "rmse": float(all_rmse.mean()),
            "nmse_free": float(free_nmse.mean()), "rmse_free": float(free_rmse.mean())}


def _check_root(root: Path) -> None:
    if not root.is_dir():
        raise UserError(f"RadioMapSeer folder not found: {root}")
    layout = "(png/buildings_complete, png/cars, gain/DPM or gain/carsDPM, png/antennas or antenna/{map}.json)"
    for sub in ("png/buildings_complete", "gain"):
        if not (root / sub).is_dir():
            raise UserError(f"{root}: no {sub} folder: not a RadioMapSeer-format folder {layout}")
    if not any(path.exists() for path in (root / "png" / "antennas", root / "antenna", root / "antennas.csv")):
        raise UserError(f"{root}: no png/antennas or antenna folder (nor antennas.csv): not a RadioMapSeer-format "
                        f"folder {layout}")
