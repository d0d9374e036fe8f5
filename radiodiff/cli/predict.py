"""`radiodiff predict`: a radio map from the trained diffusion model, served RadioDiff-Flux style.

    radiodiff predict --buildings FILE.png --tx ROW COL --out FILE.png [--cars FILE.png]
                      [--bank PATH] [--samples K] [--uncertainty FILE.png]
                      [--models DIR] [--params FILE] [--threads N]

Inputs are RadioMapSeer-style masks (256 x 256 binary PNG, 255 = building or car) and the Tx
pixel on them. The output is an 8-bit gray PNG at the model's resolution (gray = 255 * gain).
With --bank, the layout's stage-1 midpoint comes from the bank (or is computed and added to
it); --samples K averages K seeds, and --uncertainty writes their per-pixel spread
(255 = std 0.5). Every input is checked before the model runs; outputs are written atomically.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from radiodiff.errors import UserError

STD_FULL_SCALE = 0.5  # the largest std of values in [0, 1]: written as gray 255


def add_parser(subparsers) -> None:
    """Register the `predict` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "predict",
        help="predict a radio map with the trained model (RadioDiff-Flux)",
        description="\n\n".join(__doc__.split("\n\n")[:3]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--buildings", type=Path, required=True, metavar="FILE.png",
                        help="layout: 256x256 binary PNG, 255 = building")
    parser.add_argument("--tx", type=int, nargs=2, required=True, metavar=("ROW", "COL"),
                        help="Tx pixel on --buildings (0..255)")
    parser.add_argument("--cars", type=Path, metavar="FILE.png", help="car mask: 256x256 binary PNG, 255 = car")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="output gain PNG")
    parser.add_argument("--bank", type=Path, metavar="PATH", help="midpoint bank directory (default: no bank)")
    parser.add_argument("--samples", type=int, default=1, metavar="K", help="seeds averaged (default 1)")
    parser.add_argument("--uncertainty", type=Path, metavar="FILE.png",
                        help="with --samples K > 1: per-pixel std PNG (255 = std 0.5)")
    parser.add_argument("--models", type=Path, default=Path("models"), metavar="DIR",
                        help="folder of ldm.pt, vae.pt and flux_tail.pt (default: models)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                        help="params file (default: params.yaml)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch threads (default 1: a one-map query gains little from more, and on a "
                             "busy machine two threads stall each other)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `predict` for parsed arguments; returns the exit code (UserError on bad input)."""
    from radiodiff.config import load_params
    from radiodiff.data.layout import read_mask_png
    from radiodiff.serve import FluxPredictor, prepare_query

    _check_options(args)
    import torch

    torch.set_num_threads(args.threads)  # an entry point: the library never sets thread counts
    params = load_params(args.params)
    buildings = read_mask_png(args.buildings)
    cars = None if args.cars is None else read_mask_png(args.cars)
    query = prepare_query(buildings, tuple(args.tx), cars, params.prepare.resolution)
    ldm_path, vae_path = _model_files(args.models)
    predictor = FluxPredictor.from_files(ldm_path=ldm_path, vae_path=vae_path, flux=params.flux,
                                         resolution=params.prepare.resolution,
                                         tail_path=args.models / "flux_tail.pt", bank_dir=args.bank)
    start = time.perf_counter()
    gain, std, stats = predictor.predict([query], samples=args.samples)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    _write_png(args.out, np.rint(gain[0] * 255.0))
    written = str(args.out)
    if args.uncertainty is not None:
        _write_png(args.uncertainty, np.rint(np.clip(std[0] / STD_FULL_SCALE, 0.0, 1.0) * 255.0))
        written += f" and {args.uncertainty}"
    side = predictor.resolution
    plural = "" if args.samples == 1 else "s"
    print(f"wrote {written} ({side}x{side}, {args.samples} sample{plural}, "
          f"bank: {_bank_outcome(stats, args.bank is not None)}, {elapsed_ms:.0f} ms)")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Reject flag mistakes before reading any file."""
    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if args.uncertainty is not None and args.samples < 2:
        raise UserError("--uncertainty needs --samples K with K > 1 (the spread of K samples)")
    for flag, path in (("--out", args.out), ("--uncertainty", args.uncertainty)):
        if path is None:
            continue
        if path.suffix.lower() != ".png":
            raise UserError(f"{flag} must be a .png file, got {path}")
        if not path.parent.is_dir():
            raise UserError(f"{flag}: folder {path.parent} does not exist")
    if args.uncertainty is not None and args.uncertainty.resolve() == args.out.resolve():
        raise UserError("--uncertainty and --out must be different files")


def _model_files(models: Path) -> tuple[Path, Path]:
    """(ldm.pt, vae.pt) in `models`, or a UserError saying how to make them."""
    paths = (models / "ldm.pt", models / "vae.pt")
    for path in paths:
        if not path.is_file():
            raise UserError(f"model file not found: {path} (run `dvc repro` first to train the models)")
    return paths


def _bank_outcome(stats: dict, has_bank: bool) -> str:
    """One word for the bank lookups: the worst of them (miss, then nearest, then hit)."""
    if not has_bank:
        return "none"
    for name, word in (("bank_misses", "miss"), ("bank_nearest", "nearest")):
        if stats[name]:
            return word
    return "hit"


def _write_png(path: Path, gray: np.ndarray) -> None:
    from PIL import Image

    from radiodiff.io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).save(tmp, format="PNG")
