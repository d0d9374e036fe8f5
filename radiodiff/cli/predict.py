"""`radiodiff predict`: a radio map from the trained diffusion model, served RadioDiff-Flux style.

    radiodiff predict --buildings FILE.png --tx ROW COL --out FILE.png [--cars FILE.png]
                      [--full-resolution] [--bank PATH] [--samples K] [--uncertainty FILE.png]
                      [--models DIR] [--params FILE] [--threads N] [--device auto|cpu|cuda|cuda:N]
    radiodiff predict --queries FILE.jsonl --out DIR [--bank PATH] [--samples K] ...

Inputs are RadioMapSeer-style masks (binary PNG, 255 = building or car) of a 256 m x 256 m block
and the Tx pixel on them. A pixel is 256 m / side: RadioMapSeer's 256 x 256 layouts have 1 m
pixels; any square side that is a multiple of the model's resolution (64 by default) up to 1024
is taken, as `radiodiff simulate` takes them. The output is an 8-bit gray PNG at the model's
resolution (gray = 255 * gain), or with --full-resolution on the layout's own grid (the model's
map interpolated between its pixels, buildings exactly 0), which is what a next tool on the
input grid expects.
A --cars query is served from the static layout's midpoint: only the tail sees the vehicles.
With --bank, the layout's stage-1 midpoint comes from the bank (or is computed and added to
it); --samples K averages K seeds, and --uncertainty writes their per-pixel spread
(255 = std 0.5). --queries answers many queries in one process, one by one as a server
would (one JSON object a line: {"buildings": "a.png", "tx": [row, col], "cars": "c.png"},
paths relative to the file), writing DIR/00000.png, DIR/00001.png, ... in line order.
Every input is checked before the model runs; outputs are written atomically.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from radiodiff.artifacts.layout import MODELS, ModelFiles
from radiodiff.errors import UserError

STD_FULL_SCALE = 0.5  # the largest std of values in [0, 1]: written as gray 255
MAX_SAMPLES = 64  # seeds one query may average: the spread of the mean has settled long before
OUTPUT_NAME = re.compile(r"^\d{5,}\.png$")  # the maps `--queries` writes: 00000.png, 00001.png, ...


def add_parser(subparsers) -> None:
    """Register the `predict` subcommand on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "predict",
        help="predict a radio map with the trained model (RadioDiff-Flux)",
        description="\n\n".join(__doc__.split("\n\n")[:3]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--buildings", type=Path, metavar="FILE.png",
                        help="layout: 256x256 binary PNG, 255 = building")
    parser.add_argument("--tx", type=int, nargs=2, metavar=("ROW", "COL"), help="Tx pixel on --buildings (row, col from 0)")
    parser.add_argument("--cars", type=Path, metavar="FILE.png", help="car mask on the layout's grid: binary PNG, 255 = car")
    parser.add_argument("--queries", type=Path, metavar="FILE.jsonl",
                        help="many queries, one JSON object a line, instead of --buildings/--tx/--cars")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.png|DIR",
                        help="output gain PNG (with --queries: output folder); missing folders are created")
    parser.add_argument("--full-resolution", action="store_true",
                        help="write the map on the layout's own grid instead of the model's resolution")
    parser.add_argument("--bank", type=Path, metavar="PATH",
                        help="midpoint bank directory (default: no bank); one built by build_bank is only read")
    parser.add_argument("--serving-bank", type=Path, metavar="DIR",
                        help="store misses here, never in --bank (default for a bank build_bank sealed: PATH-serving)")
    parser.add_argument("--samples", type=int, default=1, metavar="K",
                        help=f"seeds averaged (default 1, at most {MAX_SAMPLES})")
    parser.add_argument("--uncertainty", type=Path, metavar="FILE.png",
                        help="with --samples K > 1: per-pixel std PNG (255 = std 0.5)")
    parser.add_argument("--models", type=Path, default=MODELS.folder, metavar="DIR",
                        help=f"folder of the trained model files (default: {MODELS.folder})")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                        help="params file (default: params.yaml)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="auto, cpu, cuda or cuda:N (default: RADIODIFF_DEVICE, else params flux.device)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch threads, at most this machine's cores (default 1: a one-map query gains "
                             "little from more, and on a busy machine two threads stall each other)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `predict` for parsed arguments; returns the exit code (UserError on bad input)."""
    from radiodiff.cli.queries import read_queries
    from radiodiff.config import load_params
    from radiodiff.data.layout import read_mask_png
    from radiodiff.serve import FluxPredictor, at_layout_resolution, prepare_query

    _check_options(args)
    import torch

    torch.set_num_threads(args.threads)  # an entry point: the library never sets thread counts
    params = load_params(args.params)
    if args.queries is not None:
        queries = read_queries(args.queries, params.prepare.resolution)
    else:
        cars = None if args.cars is None else read_mask_png(args.cars, size=None)
        queries = [prepare_query(read_mask_png(args.buildings, size=None), tuple(args.tx), cars,
                                 params.prepare.resolution)]
    files = ModelFiles(args.models).served()
    predictor = FluxPredictor.from_files(ldm_path=files.ldm, vae_path=files.vae, flux=params.flux,
                                         resolution=params.prepare.resolution, tail_path=files.flux_tail,
                                         bank_dir=args.bank, serving_bank_dir=args.serving_bank,
                                         device=args.device)
    if args.queries is not None:
        return _answer_each(predictor, queries, args)
    start = time.perf_counter()
    gain, std, stats = predictor.predict(queries, samples=args.samples)  # host arrays: the device is done
    if args.full_resolution:
        gain = at_layout_resolution(gain, queries)
        std = None if std is None else at_layout_resolution(std, queries)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    _write_png(args.out, np.rint(gain[0] * 255.0))
    written = str(args.out)
    if args.uncertainty is not None:
        _write_png(args.uncertainty, np.rint(np.clip(std[0] / STD_FULL_SCALE, 0.0, 1.0) * 255.0))
        written += f" and {args.uncertainty}"
    side = gain.shape[-1]
    plural = "" if args.samples == 1 else "s"
    _warn_quarantined(predictor, set())
    _warn_unstored(predictor, stats)
    _warn_missing_tail(predictor)
    print(f"wrote {written} ({side}x{side}, {args.samples} sample{plural}, "
          f"bank: {_bank_outcome(stats, args.bank is not None)}, tail: {predictor.tail_name}, "
          f"{elapsed_ms:.0f} ms on {predictor.device})")
    return 0


def _warn_missing_tail(predictor) -> None:
    """One stderr line, beside the result line, when the asked-for tuned tail was absent."""
    if predictor.missing_tail is not None:
        print(f"warning: {predictor.missing_tail} not found: served with the plain tail (a less accurate "
              "map); run `dvc repro tune_tail`, or set flux.use_tuned_tail: false to silence this",
              file=sys.stderr)


def _warn_quarantined(predictor, warned: set) -> None:
    """One stderr line per bank part found damaged (skipped, so its layouts miss)."""
    bank = predictor.bank
    for name, reason in ({} if bank is None else bank.quarantined).items():
        if name not in warned:
            warned.add(name)
            print(f"warning: damaged bank part skipped: {reason}; run `radiodiff bank verify`", file=sys.stderr)


def _warn_unstored(predictor, stats) -> None:
    """One stderr line when misses were served but the bank could not store them."""
    if stats["bank_unstored"]:
        print(f"warning: {stats['bank_unstored']} computed midpoint(s) not stored ({predictor.bank_write_error}); "
              "the maps are served, the bank is unchanged", file=sys.stderr)


def _answer_each(predictor, queries: list, args: argparse.Namespace) -> int:
    """Answer `queries` one at a time, as a server would (a miss stored in the bank serves the
    queries after it), writing the gain of query i to `--out`/i.png (zero-padded) atomically."""
    from radiodiff.serve import at_layout_resolution

    from radiodiff.io import atomic_dir

    digits = max(5, len(str(len(queries) - 1)))
    totals = Counter()
    seconds = []
    warned: set[str] = set()
    # The maps go into a fresh folder swapped in at the end: an interrupted run leaves the old
    # folder as it was, and a rerun never leaves an earlier, longer run's maps beside its own.
    try:
        with atomic_dir(args.out) as folder:
            for i, query in enumerate(queries):
                start = time.perf_counter()
                gain, _, stats = predictor.predict([query], samples=args.samples)
                if args.full_resolution:
                    gain = at_layout_resolution(gain, [query])
                seconds.append(time.perf_counter() - start)
                totals.update(stats)
                _write_png(folder / f"{i:0{digits}d}.png", np.rint(gain[0] * 255.0))
                _warn_quarantined(predictor, warned)
                if stats["bank_unstored"] and totals["bank_unstored"] == stats["bank_unstored"]:
                    _warn_unstored(predictor, stats)  # once, at the first miss it could not store
    except OSError as exc:  # a read-only or full parent folder: the user's to fix
        raise UserError(f"cannot write --out {args.out}: {exc.strerror or exc}") from None
    side = gain.shape[-1]
    plural = "" if args.samples == 1 else "s"
    bank = "none" if args.bank is None else ", ".join(
        f"{totals[name]} {word}" for name, word in (("bank_hits", "hit"), ("bank_nearest", "nearest"),
                                                     ("bank_misses", "miss")))
    _warn_missing_tail(predictor)
    print(f"wrote {len(queries)} maps to {args.out} ({side}x{side}, {args.samples} sample{plural}, "
          f"bank: {bank}, tail: {predictor.tail_name}, median {1e3 * statistics.median(seconds):.0f} ms/map on {predictor.device})")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Reject flag mistakes before reading any file."""
    if args.serving_bank is not None and args.bank is None:
        raise UserError("--serving-bank goes with --bank (it holds the misses of a built bank)")
    if not 1 <= args.samples <= MAX_SAMPLES:
        raise UserError(f"--samples must be in 1..{MAX_SAMPLES}, got {args.samples}")
    cores = os.cpu_count() or 1
    if not 1 <= args.threads <= cores:
        raise UserError(f"--threads must be in 1..{cores} (this machine's cores), got {args.threads}")
    if args.device is not None:
        from radiodiff.devices import check_device_spec

        check_device_spec(args.device, "--device")
    if args.queries is not None:
        _check_batch_options(args)
        return
    if args.buildings is None or args.tx is None:
        raise UserError("give --buildings FILE.png and --tx ROW COL, or --queries FILE.jsonl")
    if args.uncertainty is not None and args.samples < 2:
        raise UserError("--uncertainty needs --samples K with K > 1 (the spread of K samples)")
    for flag, path in (("--out", args.out), ("--uncertainty", args.uncertainty)):
        if path is None:
            continue
        if path.suffix.lower() != ".png":
            raise UserError(f"{flag} must be a .png file, got {path}")
        _check_parent(flag, path)
        if path.is_dir():
            raise UserError(f"{flag} {path} is a folder; give a file name ending in .png")
    if args.uncertainty is not None and args.uncertainty.resolve() == args.out.resolve():
        raise UserError("--uncertainty and --out must be different files")


def _check_parent(flag: str, path: Path) -> None:
    """Missing folders above `path` are created when it is written (as `simulate` does); a file
    in their place is refused now, before the model runs."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{flag} {path}: {parent} is a file, not a folder")
            return


def _check_batch_options(args: argparse.Namespace) -> None:
    """Flag mistakes of `--queries` mode: --out is a folder, the single-query flags do not apply."""
    single = [flag for flag, value in (("--buildings", args.buildings), ("--tx", args.tx), ("--cars", args.cars),
                                       ("--uncertainty", args.uncertainty)) if value is not None]
    if single:
        raise UserError(f"--queries takes its layouts and Tx from the file; drop {', '.join(single)}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out: with --queries it is an output folder, and {args.out} is a file")
    _check_parent("--out", args.out)
    if args.out.is_dir():  # it is replaced whole: only a folder of an earlier run's maps may be
        foreign = sorted(p.name for p in args.out.iterdir() if not OUTPUT_NAME.match(p.name))
        if foreign:
            raise UserError(f"--out {args.out} holds files predict did not write ({', '.join(foreign[:3])}"
                            f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder")


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

    try:
        with atomic_path(path) as tmp:
            Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).save(tmp, format="PNG")
    except OSError as exc:  # a full disk or a read-only folder: the user's to fix, not a bug
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
