"""A 2-D dominant-path propagation simulator (numpy/scipy, CPU) for RadioMapSeer-style radio maps.

`CitySimulator(buildings, cars=..., params=SimParams())` does the per-city work once;
`.gain_gray(row, col)` / `.gain_db(row, col)` give one Tx's map. The model is stated in
`model.py`; gray = 2.55 * (dB + 147).
"""

from radiodiff.sim.model import SimParams, db_to_gray, gray_to_db
from radiodiff.sim.simulator import CitySimulator, simulate_map

__all__ = ["CitySimulator", "SimParams", "db_to_gray", "gray_to_db", "simulate_map"]
