"""`radiodiff simulate`: radio maps from the dominant-path simulator, as RadioMapSeer gray PNGs.

Two forms:

    radiodiff simulate --map-id M (--tx-id K | --all-tx) --out-dir DIR [--cars]
    radiodiff simulate --buildings FILE.png --tx ROW COL --out FILE.png [--cars FILE.png]

The first runs on a shipped RadioMapSeer layout and writes `DIR/{M}_{K}.png`; the second on
a user's own square layout (0 free, 255 building). Every input is checked before anything
is written; each PNG is written atomically.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from radiodiff.errors import UserError
from radiodiff.io import safe_child

RADIOMAPSEER_SIDE_M = 256.0  # a RadioMapSeer map covers 256 m x 256 m
# Pixel sizes the simulator's float32 path lengths handle: 1 cm to 1 km per pixel.
PIXEL_SIZE_RANGE_M = (0.01, 1000.0)


def add_parser(subparsers) -> None:
    """Register the `simulate` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate radio maps (dominant path model) on a city layout",
        description="\n\n".join(__doc__.split("\n\n")[:3]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Gray = 2.55 * (dB + 147): 0 is the -147 dB truncation and 0 inside buildings.",
    )
    parser.add_argument("--map-id", type=int, help="a RadioMapSeer map id (0..700)")
    tx = parser.add_mutually_exclusive_group()
    tx.add_argument("--tx-id", type=int, help="one of the map's 80 Tx sites (0..79)")
    tx.add_argument("--all-tx", action="store_true", help="all 80 Tx sites of the map")
    parser.add_argument("--out-dir", type=Path, help="folder for {map}_{tx}.png")
    parser.add_argument("--buildings", type=Path,
                        help="your own layout: square binary PNG, 255 = building; a pixel is 256 m / side "
                             "(1 m at 256, as predict reads it) unless --pixel-size-m says otherwise")
    parser.add_argument("--tx", type=int, nargs=2, metavar=("ROW", "COL"), help="Tx pixel on --buildings")
    parser.add_argument("--out", type=Path, help="output PNG for --buildings")
    parser.add_argument("--cars", nargs="?", const=True, default=None, metavar="FILE.png",
                        help="with --map-id: use the map's cars; with --buildings: a car mask PNG")
    parser.add_argument("--pixel-size-m", type=float, default=None,
                        help="metres per pixel of --buildings (default: 256 m / side, as RadioMapSeer)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `simulate` for parsed arguments; returns the exit code (UserError on bad input)."""
    if (args.map_id is None) == (args.buildings is None):
        raise UserError("simulate needs exactly one of --map-id (a RadioMapSeer layout) or --buildings FILE.png")
    if args.map_id is not None:
        return _run_map(args)
    return _run_file(args)


def _run_map(args: argparse.Namespace) -> int:
    from radiodiff.data.geometry import load_geometry

    _forbid(args, "--map-id", tx=args.tx, out=args.out, pixel_size_m=args.pixel_size_m)
    if args.tx_id is None and not args.all_tx:
        raise UserError("--map-id needs --tx-id K or --all-tx")
    if args.out_dir is None:
        raise UserError("--map-id needs --out-dir DIR")
    if args.cars not in (None, True):
        raise UserError("with --map-id, --cars takes no file: it uses the map's own cars")
    scene = load_geometry().scene(args.map_id)
    tx_ids = list(range(len(scene.tx_sites))) if args.all_tx else [args.tx_id]
    sites = [scene.tx(k) for k in tx_ids]  # checks the ids before any work
    _make_out_dir(args.out_dir)
    cars = scene.cars if args.cars else None
    maps, setup_ms, per_map_ms = _simulate(scene.buildings, cars, sites, pixel_size_m=1.0)
    for tx_id, gray in zip(tx_ids, maps):
        _write_png(safe_child(args.out_dir, f"{args.map_id}_{tx_id}.png"), gray)
    _report(setup_ms, per_map_ms, len(maps), f"{args.out_dir}/{args.map_id}_*.png")
    return 0


def _run_file(args: argparse.Namespace) -> int:
    from radiodiff.data.layout import read_mask_png, resolve_tx

    _forbid(args, "--buildings", tx_id=args.tx_id, all_tx=args.all_tx or None, out_dir=args.out_dir)
    if args.tx is None or args.out is None:
        raise UserError("--buildings needs --tx ROW COL and --out FILE.png")
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {args.out}")
    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a file name ending in .png")
    if args.cars is True:
        raise UserError("with --buildings, --cars needs a car mask file: --cars FILE.png")
    buildings = read_mask_png(args.buildings, size=None)
    if buildings.shape[0] != buildings.shape[1]:
        raise UserError(f"{args.buildings}: layout must be square, got {buildings.shape[0]}x{buildings.shape[1]}")
    cars = None if args.cars is None else read_mask_png(Path(args.cars), size=buildings.shape[0])
    site = resolve_tx(buildings, *args.tx)
    pixel_size_m = args.pixel_size_m if args.pixel_size_m is not None else RADIOMAPSEER_SIDE_M / buildings.shape[0]
    low, high = PIXEL_SIZE_RANGE_M
    if not (math.isfinite(pixel_size_m) and low <= pixel_size_m <= high):
        raise UserError(f"--pixel-size-m must be between {low} and {high} m, got {pixel_size_m}")
    maps, setup_ms, per_map_ms = _simulate(buildings, cars, [site], pixel_size_m=pixel_size_m)
    _write_png(args.out, maps[0])
    _report(setup_ms, per_map_ms, 1, str(args.out))
    return 0


def _forbid(args: argparse.Namespace, mode: str, **options) -> None:
    """Reject options that belong to the other form."""
    given = [f"--{name.replace('_', '-')}" for name, value in options.items() if value is not None]
    if given:
        raise UserError(f"{', '.join(given)} cannot be used with {mode}")


def _simulate(buildings, cars, sites, *, pixel_size_m: float) -> tuple[list[np.ndarray], float, float]:
    """Gray maps for Tx `sites`, the setup time and the mean time per map (ms)."""
    from radiodiff.sim import CitySimulator

    start = time.perf_counter()
    simulator = CitySimulator(buildings, cars=cars, pixel_size_m=pixel_size_m)
    setup_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    maps = [simulator.gain_gray(row, col) for row, col in sites]
    return maps, setup_ms, (time.perf_counter() - start) * 1e3 / len(sites)


def _make_out_dir(out_dir: Path) -> None:
    """Create `--out-dir` before any simulation, so an unusable folder fails before work is done."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out-dir {out_dir}: cannot create the folder ({exc.strerror})") from None


def _write_png(path: Path, gray: np.ndarray) -> None:
    from PIL import Image

    from radiodiff.io import atomic_path

    try:
        with atomic_path(path) as tmp:
            Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).save(tmp, format="PNG")
    except OSError as exc:  # a full disk, a read-only folder, a file where a folder should be
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def _report(setup_ms: float, per_map_ms: float, count: int, where: str) -> None:
    amortised = setup_ms / count + per_map_ms
    print(f"setup {setup_ms:.0f} ms, {per_map_ms:.1f} ms per map, {amortised:.1f} ms per map amortised "
          f"over {count} map{'s' if count > 1 else ''}; wrote {where}")
