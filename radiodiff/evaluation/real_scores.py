"""The trained pipeline and the simulator scored on a RadioMapSeer-format folder.

Every method answers the same samples (`radiomapseer.load_real_maps`), and each row is scored
the same way (`radiomapseer.score_maps`):

- `flux`: the served RadioDiff-Flux sampler (`serve.FluxPredictor`, its configured tail) on the
  cold path, with no bank: a real folder's layouts are not in the pipeline's bank, and a run of
  this command must not add to the DVC-tracked one. A banked midpoint of the layout is the same
  computation from another noise draw, so the quality is the served quality; the network calls
  reported are the cold path's (prefix + tail), a bank hit pays the tail only.
- `ddim_<N>`: the denoiser's own sampler over the whole time range, N steps, seeded noise.
- `baseline`: the supervised UNet of `train_baseline`, one pass (when its file exists).
- `simulator`: our dominant-path simulator on the 256 x 256 masks, area-averaged like the
  targets: how far the training targets are from the folder's maps, the floor a model
  trained on them sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radiodiff.data.conditions import encode_condition
from radiodiff.data.resample import downsample_gain
from radiodiff.evaluation.radiomapseer import RealMaps, score_maps
from radiodiff.progress import Progress

BATCH = 16  # queries per network batch: bounded memory on a laptop, full batches on a GPU


@dataclass(frozen=True)
class RealScore:
    """One method's row: mean NMSE / RMSE over the maps (all pixels and free pixels only),
    network calls per map and wall time per map in ms (median of the method's batches)."""

    method: str
    nmse: float
    rmse: float
    nmse_free: float
    rmse_free: float
    unet_calls: int
    ms_per_map: float
    maps: int


def score_flux(predictor, real: RealMaps) -> RealScore:
    """The served Flux sampler of `predictor` (a `FluxPredictor` without a bank)."""
    queries = [sample.query for sample in real.samples]
    calls = predictor.plan.prefix_calls + predictor.plan.tail_calls  # the cold path: stage 1 runs per layout
    return _row("flux", real, *_batched(queries, lambda chunk: predictor.predict(chunk)[0], "flux"), calls)


def score_ddim(model, encodings, real: RealMaps, steps: int, seed: int = 0) -> RealScore:
    """DDIM with `steps` steps on the denoiser `model` (a `LatentDiffusion`), noise seeded by `seed`."""
    from radiodiff.generation import generate

    def run(chunk: list[int]) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed + chunk[0])  # per batch: results do not depend on BATCH order
        cond = _conditions(real, encodings, chunk)
        return generate(model, cond, steps=steps, generator=generator)[:, 0].float().cpu().numpy()

    name = f"ddim_{steps}"
    return _row(name, real, *_batched(list(range(len(real.samples))), run, name), steps)


def score_baseline(path: Path, device, real: RealMaps) -> RealScore:
    """The supervised baseline in `path`, with its own condition channels."""
    from radiodiff.artifacts.baseline import load_baseline, predict_baseline

    model, condition = load_baseline(path, device)

    def run(chunk: list[int]) -> np.ndarray:
        cond = _conditions(real, condition.encodings, chunk).to(device)
        with torch.no_grad():
            return predict_baseline(model, cond)[:, 0].float().cpu().numpy()

    return _row("baseline", real, *_batched(list(range(len(real.samples))), run, "baseline"), 1)


def score_simulator(real: RealMaps, resolution: int) -> RealScore:
    """Our simulator on each sample's 256 x 256 layout (and cars, for carsDPM targets)."""
    from radiodiff.sim import CitySimulator

    factor = real.layouts_256[real.samples[0].map_id].shape[0] // resolution
    city, simulator = None, None
    maps, seconds = [], []
    with Progress(len(real.samples), "evaluate: simulator", unit="map") as bar:
        for sample in real.samples:
            start = time.perf_counter()
            if sample.map_id != city:  # the per-city setup, shared by the map's Tx (samples come map by map)
                cars = real.cars_256[sample.map_id] if real.gain_folder == "carsDPM" else None
                city, simulator = sample.map_id, CitySimulator(real.layouts_256[sample.map_id], cars=cars)
            gray = simulator.gain_gray(*sample.tx_256)
            maps.append(downsample_gain(gray.astype(np.float32) / 255.0, real.layouts_256[sample.map_id], factor))
            seconds.append(time.perf_counter() - start)
            bar.update()
    return _row("simulator", real, np.stack(maps), seconds, 0)


def _conditions(real: RealMaps, encodings, indices: Sequence[int]) -> torch.Tensor:
    """Condition channels `[len(indices), C, H, W]` of those samples, as the served model encodes
    a query; built per batch, since the whole dataset's would take gigabytes."""
    return torch.from_numpy(np.stack([
        encode_condition(s.query.buildings, s.query.cars, s.query.tx[0], s.query.tx[1], encodings)
        for s in (real.samples[i] for i in indices)]))


def _batched(items: Sequence, run: Callable[[list], np.ndarray], label: str) -> tuple[np.ndarray, list[float]]:
    """`run` over chunks of BATCH items, with a status line on stderr: (stacked maps `[N, H, W]`,
    seconds per map of each chunk)."""
    maps, seconds = [], []
    with Progress(len(items), f"evaluate: {label}", unit="map") as bar:
        for first in range(0, len(items), BATCH):
            chunk = list(items[first:first + BATCH])
            start = time.perf_counter()
            maps.append(np.asarray(run(chunk), dtype=np.float32))
            seconds.append((time.perf_counter() - start) / len(chunk))
            bar.update(len(chunk))
    return np.concatenate(maps), seconds


def _row(method: str, real: RealMaps, maps: np.ndarray, seconds: list[float], calls: int) -> RealScore:
    """Score `maps` `[N, H, W]` against the targets over the model-grid layouts of the samples."""
    buildings = np.stack([sample.query.buildings for sample in real.samples])
    scores = score_maps(maps, real.targets, buildings)
    return RealScore(method=method, unet_calls=int(calls), ms_per_map=1e3 * float(np.median(seconds)),
                     maps=len(real.samples), **scores)
