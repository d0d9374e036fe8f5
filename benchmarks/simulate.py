"""Speed of the propagation simulator on real RadioMapSeer layouts.

    .venv/bin/python benchmarks/simulate.py [--maps 1 2 50] [--repeats 3]

For each map, with and without cars: convex corners, per-city setup (ms), ms per Tx map
(mean over the map's 80 Tx) and the amortised ms per map (setup / 80 + per Tx); each the
median over the repeats. Times are CPU times of this process (`time.process_time`: the
simulator runs on one core), so other jobs on a shared machine inflate them less than
wall time; the wall-clock amortised time is printed beside them.
"""

from __future__ import annotations

import argparse
import statistics
import time

from radiodiff.data.geometry import load_geometry
from radiodiff.sim import CitySimulator
from radiodiff.sim.rays import ray_fan

WIDTHS = (4, 5, 7, 9, 10, 17, 12)


def measure(scene, *, with_cars: bool) -> tuple[int, float, float, float]:
    """Corners, setup CPU ms, mean CPU ms per Tx map, and wall ms for all of it, for one scene."""
    wall, cpu = time.perf_counter(), time.process_time()
    simulator = CitySimulator(scene.buildings, cars=scene.cars if with_cars else None)
    setup_ms = (time.process_time() - cpu) * 1e3
    sites = [scene.tx(k) for k in range(len(scene.tx_sites))]
    cpu = time.process_time()
    for row, col in sites:
        simulator.gain_gray(row, col)
    per_tx_ms = (time.process_time() - cpu) * 1e3 / len(sites)
    return simulator.corner_count, setup_ms, per_tx_ms, (time.perf_counter() - wall) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", type=int, nargs="+", default=[1, 2, 50])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    geometry = load_geometry()
    ray_fan(256)  # built once per process, not part of any city's setup
    header = ("map", "cars", "corners", "setup ms", "ms/Tx map", "amortised ms/map", "wall ms/map")
    print(" ".join(f"{name:>{width}}" for name, width in zip(header, WIDTHS)))
    for map_id in args.maps:
        scene = geometry.scene(map_id)
        for with_cars in (False, True):
            runs = [measure(scene, with_cars=with_cars) for _ in range(args.repeats)]
            corners = runs[0][0]
            setup = statistics.median(run[1] for run in runs)
            per_tx = statistics.median(run[2] for run in runs)
            amortised = setup / len(scene.tx_sites) + per_tx
            wall = statistics.median(run[3] for run in runs) / len(scene.tx_sites)
            cars = "yes" if with_cars else "no"
            cells = (map_id, cars, corners, f"{setup:.0f}", f"{per_tx:.1f}", f"{amortised:.1f}", f"{wall:.1f}")
            print(" ".join(f"{cell:>{width}}" for cell, width in zip(cells, WIDTHS)))


if __name__ == "__main__":
    main()
