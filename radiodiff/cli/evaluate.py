"""`radiodiff evaluate --radiomapseer DIR`: the trained pipeline scored on a RadioMapSeer folder.

    radiodiff evaluate --radiomapseer DIR [--maps ID ... | --split train|val|test] [--tx-per-map K]
                       [--gain DPM|carsDPM] [--antenna-order xy|rowcol] [--ddim-steps N]
                       [--no-simulator] [--out FILE.json] [--models DIR] [--params FILE]
                       [--device auto|cpu|cuda|cuda:N] [--threads N]

DIR holds the published dataset's layout: png/buildings_complete/{map}.png, png/cars/{map}.png,
gain/DPM/{map}_{tx}.png or gain/carsDPM/{map}_{tx}.png, and the Tx sites: png/antennas/{map}_{tx}.png
where present, else antenna/{map}.json (one [x, y] = (column, row) pair per Tx id; --antenna-order
rowcol for the other way round) or antennas.csv.

Every gain map found (of --maps, or the folder's maps of RadioUNet's --split: `prepare` takes its
maps from that split, so --split test scores cities no stage trained on; at most K Tx per map)
is resized to the model's grid as `prepare` does and predicted by: the served RadioDiff-Flux
sampler (cold path, no bank is read or written), DDIM with N steps (default: the best DDIM row
of plots/evaluate_table.json, else params ldm.sample_steps), the supervised baseline (if
models/baseline.pt exists), and the simulator itself. One row per method: mean NMSE (per-map
MSE(pred, gt) / MSE(gt, 0)) and RMSE over all pixels and over free pixels, network calls and ms
per map. The last line reads `NMSE <x> RMSE <y> (<n> maps, flux)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from radiodiff.artifacts.layout import MODELS, PLOTS_DIR, ModelFiles
from radiodiff.errors import UserError

EVALUATE_TABLE = PLOTS_DIR / "evaluate_table.json"  # written by the evaluate stage


def add_parser(subparsers) -> None:
    """Register the `evaluate` subcommand on an argparse subparsers object."""
    from radiodiff.evaluation.radiomapseer import ANTENNA_ORDERS, GAIN_FOLDERS
    from radiodiff.options import SPLITS

    parser = subparsers.add_parser(
        "evaluate",
        help="score the trained pipeline on a RadioMapSeer-format folder",
        description="\n\n".join(__doc__.split("\n\n")[:4]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--radiomapseer", type=Path, required=True, metavar="DIR", help="RadioMapSeer-format folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--maps", type=int, nargs="+", metavar="ID", help="map ids to score (default: every map)")
    which.add_argument("--split", choices=SPLITS,
                       help="the folder's maps of RadioUNet's split (test: cities no stage trained on)")
    parser.add_argument("--tx-per-map", type=int, metavar="K", help="at most K Tx per map, the lowest ids")
    parser.add_argument("--gain", choices=GAIN_FOLDERS, help="gain folder (default: DPM if present, else carsDPM)")
    parser.add_argument("--antenna-order", choices=ANTENNA_ORDERS, default="xy",
                        help="pair order in antenna/{map}.json, read for a Tx without a png/antennas image "
                             "(default xy: [column, row])")
    parser.add_argument("--ddim-steps", type=int, metavar="N", help="DDIM steps (default: see above)")
    parser.add_argument("--no-simulator", action="store_true", help="skip the simulator row (the slowest on a CPU)")
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="also write the rows as JSON")
    parser.add_argument("--models", type=Path, default=MODELS.folder, metavar="DIR",
                        help=f"folder of the trained model files (default: {MODELS.folder})")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                        help="params file (default: params.yaml)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="auto, cpu, cuda or cuda:N (default: RADIODIFF_DEVICE, else params flux.device)")
    parser.add_argument("--threads", type=int, default=2, metavar="N", help="torch threads (default 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `evaluate --radiomapseer` for parsed arguments; returns the exit code."""
    from radiodiff.config import load_params
    from radiodiff.evaluation.radiomapseer import load_real_maps
    from radiodiff.evaluation.real_scores import score_baseline, score_ddim, score_flux, score_simulator

    _check_options(args)
    import torch

    torch.set_num_threads(args.threads)  # an entry point: the library never sets thread counts
    params = load_params(args.params)
    files = ModelFiles(args.models).served()
    resolution = params.prepare.resolution
    real = load_real_maps(args.radiomapseer, resolution, maps=args.maps, tx_per_map=args.tx_per_map,
                          split=args.split, gain_folder=args.gain, antenna_order=args.antenna_order)
    _progress(f"{len(real.samples)} maps of {len(real.layouts_256)} layouts from {args.radiomapseer}/gain/"
              f"{real.gain_folder}, at {resolution}x{resolution}")
    from radiodiff.serve import FluxPredictor

    predictor = FluxPredictor.from_files(ldm_path=files.ldm, vae_path=files.vae, flux=params.flux,
                                         resolution=resolution, tail_path=files.flux_tail, device=args.device)
    steps, source = _ddim_steps(args.ddim_steps, params, predictor.model.process.num_train_steps)
    rows = []
    _progress("flux (served sampler, cold path) ...")
    rows.append(score_flux(predictor, real))
    _progress(f"ddim_{steps} ({source}) ...")
    rows.append(score_ddim(predictor.model, predictor.condition.encodings, real, steps))
    if files.baseline.is_file():
        _progress("baseline ...")
        rows.append(score_baseline(files.baseline, predictor.device, real))
    if not args.no_simulator:
        _progress("simulator ...")
        rows.append(score_simulator(real, resolution))
    if args.out is not None:
        from radiodiff.io import atomic_write_text

        atomic_write_text(args.out, json.dumps({"folder": str(args.radiomapseer), "gain": real.gain_folder,
                                                "resolution": resolution, "rows": [asdict(r) for r in rows]},
                                               indent=1))
    print(_table(rows))
    served = rows[0]
    print(f"NMSE {served.nmse:.4f} RMSE {served.rmse:.4f} ({served.maps} maps, {served.method})")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Reject flag mistakes before reading any file."""
    for flag, value in (("--tx-per-map", args.tx_per_map), ("--ddim-steps", args.ddim_steps),
                        ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.maps is not None and min(args.maps) < 0:
        raise UserError(f"--maps: map ids are >= 0, got {min(args.maps)}")
    if args.device is not None:
        from radiodiff.devices import check_device_spec

        check_device_spec(args.device, "--device")
    if args.out is not None:
        if args.out.suffix.lower() != ".json":
            raise UserError(f"--out must be a .json file, got {args.out}")
        if not args.out.parent.is_dir():
            raise UserError(f"--out: folder {args.out.parent} does not exist")


def _ddim_steps(wanted: int | None, params, num_steps: int) -> tuple[int, str]:
    """DDIM steps and where they came from: the flag, the evaluate stage's best DDIM row, or params."""
    if wanted is not None:
        if wanted > num_steps:
            raise UserError(f"--ddim-steps {wanted} exceeds the denoiser's {num_steps} training steps")
        return wanted, "--ddim-steps"
    if EVALUATE_TABLE.is_file():
        try:
            rows = [r for r in json.loads(EVALUATE_TABLE.read_text()) if r.get("family") == "ddim"]
            calls = int(min(rows, key=lambda r: float(r["nmse"]))["unet_calls_per_map"]) if rows else None
        except (json.JSONDecodeError, AttributeError, TypeError, KeyError, ValueError):
            calls = None  # an unreadable table is the stage's business: fall back to params
        if calls is not None and 1 <= calls <= num_steps:
            return calls, f"best DDIM of {EVALUATE_TABLE}"
    return params.ldm.sample_steps, "params ldm.sample_steps"


def _table(rows) -> str:
    """The rows as an aligned text table."""
    header = f"{'method':<10} {'NMSE':>8} {'RMSE':>8} {'NMSE free':>10} {'RMSE free':>10} {'calls':>6} {'ms/map':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.method:<10} {r.nmse:>8.4f} {r.rmse:>8.4f} {r.nmse_free:>10.4f} {r.rmse_free:>10.4f} "
                     f"{r.unet_calls:>6d} {r.ms_per_map:>8.1f}")
    return "\n".join(lines)


def _progress(message: str) -> None:
    """A progress line on stderr, where a log collects it apart from the table."""
    print(f"evaluate: {message}", file=sys.stderr, flush=True)
