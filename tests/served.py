"""A served-model folder for `radiodiff predict` tests: the conftest toy models, a params file
at their 32 x 32 resolution, a few layout PNGs and query files over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

RES = 32  # the conftest models' resolution: 8 m pixels
PARAMS = {"prepare": {"resolution": RES},
          "flux": {"t_mids": [30], "t_mid": 30, "prefix_steps": 2, "tail_steps": 2, "seeds": [0, 1]}}
# Free pixels (at 1 m) of every layout below: the streets at rows/cols 0..47 and 112..143.
TX_POSITIONS = [(row, col) for row in (8, 24, 40, 120, 136) for col in (8, 24, 40, 120, 136)]


def layouts() -> dict[str, np.ndarray]:
    """Four 256 x 256 layouts: blocks on a street grid, two with smaller blocks, and
    `a_near`: `a` with one 8 m block more (a new scene, within the nearest bound of `a`)."""
    def blocks(size: int) -> np.ndarray:
        buildings = np.zeros((256, 256), dtype=bool)
        for r0 in (48, 144):
            for c0 in (48, 144):
                buildings[r0:r0 + size, c0:c0 + size] = True
        return buildings

    near = blocks(64)
    near[232:240, 232:240] = True
    return {"a": blocks(64), "b": blocks(40), "c": blocks(16), "a_near": near}


def served_folder(root: Path, models: Path) -> Path:
    """Write `root/params.yaml` and `root/layouts/<name>.png`; `models` holds ldm.pt and vae.pt."""
    (root / "layouts").mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    for name, buildings in layouts().items():
        Image.fromarray(buildings.astype(np.uint8) * 255).save(root / "layouts" / f"{name}.png")
    return root


def write_queries(path: Path, queries: list[tuple[str, tuple[int, int]]]) -> Path:
    """A query file of (layout name, Tx) pairs, layout paths relative to `path`'s folder."""
    lines = [json.dumps({"buildings": f"layouts/{name}.png", "tx": list(tx)}) for name, tx in queries]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_args(root: Path, models: Path, *extra: str) -> list[str]:
    """`radiodiff predict` arguments for the served folder at `root`."""
    return ["predict", "--models", str(models), "--params", str(root / "params.yaml"), *extra]
