"""Driver: `run_prepare` on the tiny config, printing "simulate static|cars map N" before each simulation of a map.

    python tests/fault_scripts/prepare.py OUT CACHE [--die-in-assemble]

Prints "metrics {json}" at the end. `--die-in-assemble` SIGKILLs the process while the
dataset folder is being written, after its first split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from radiodiff.config import PrepareConfig, SplitSizes

CONFIG = PrepareConfig(maps=SplitSizes(train=3, val=1, test=1), tx_per_map=4, dynamic=0.5, resolution=32,
                       workers=1)


def log_simulations() -> None:
    """Print a line each time a map's targets are simulated (the costly work a restart must not redo)."""
    from radiodiff.data import prepare

    simulate = prepare.simulated_gray

    def logged(scene, *args, dynamic: bool, **kwargs):
        # one line per map and kind: a map with traffic twins is simulated static and with cars
        print(f"simulate {'cars' if dynamic else 'static'} map {scene.map_id}", flush=True)
        return simulate(scene, *args, dynamic=dynamic, **kwargs)

    prepare.simulated_gray = logged


def die_in_assemble() -> None:
    """SIGKILL once the first split of the dataset folder is written, before the others."""
    from radiodiff.data import assemble
    from tests.fault_scripts.harness import die_now

    write_split = assemble._write_split

    def dying(*args, **kwargs):
        write_split(*args, **kwargs)
        die_now()

    assemble._write_split = dying


def main() -> None:
    from radiodiff.data.prepare import run_prepare

    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--die-in-assemble", action="store_true")
    args = parser.parse_args()
    log_simulations()
    if args.die_in_assemble:
        die_in_assemble()
    result = run_prepare(CONFIG, out_dir=args.out, cache_dir=args.cache, progress=False)
    print("metrics " + json.dumps(result.metrics), flush=True)


if __name__ == "__main__":
    main()
