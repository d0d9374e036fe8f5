"""Serving radio maps with RadioDiff-Flux: one user query in, a gain map out.

A query is a layout, a Tx and (optionally) cars over RadioMapSeer's 256 m block, at its 256 x 256
pixels of 1 m or any square grid whose side is a multiple of the model's resolution.
`prepare_query` brings it to the model's resolution the way `prepare` built the training
data (majority-downsampled masks, Tx pixel // factor). `FluxPredictor.predict` then takes
each layout's stage-1 midpoint from the bank (exact scene, else the nearest similar layout),
or computes it and stores it, and runs stage 2 for all queries of a seed in one batch.

A user's layout has no RadioMapSeer map id, so its scene id is a stable hash of its bytes,
negative so it never collides with a map id (0..700) in a bank built by `build_bank`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radiodiff.artifacts.denoiser import load_ldm, load_tail
from radiodiff.artifacts.vae import trained_resolution
from radiodiff.artifacts.keys import bank_key
from radiodiff.bank import BankError, Midpoint, MidpointBank, ServingBank, layout_embedding
from radiodiff.bank.serving import open_bank
from radiodiff.bank.embedding import GRID
from radiodiff.config import SOURCE_MAP_SIZE, ConditionConfig, FluxConfig
from radiodiff.data.conditions import encode_condition
from radiodiff.data.layout import resolve_tx, validate_mask
from radiodiff.data.resample import coverage, majority, upsample_gain
from radiodiff.devices import resolve_device, resolve_precision
from radiodiff.errors import UserError
from radiodiff.flux import flux_plan, scene_noise, stage1_midpoint, stage2_decode, static_conditions
from radiodiff.generation import LatentDiffusion, trajectory_denoiser
from radiodiff.models.unet import ConditionalUNet

EXTRA_SEED_BASE = 1000  # sample k >= len(flux.seeds) uses seed 1000 + k (never in a built bank)
MAX_LAYOUT_SIDE = 1024  # pixels: a 256 m block at 25 cm per pixel


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare by
class Query:
    """One request at the model's resolution: `buildings` `[H, W]` bool, `cars` `[H, W]` float32
    (the share of each pixel covered by vehicles), `tx` the (row, col) pixel of the transmitter
    on a free pixel of `buildings`. `source_bits` is the `[S, S]` layout it came from, bit-packed
    (8 KiB at 256), so that the answer can be returned on the user's own grid (`at_layout_resolution`)."""

    buildings: np.ndarray
    tx: tuple[int, int]
    cars: np.ndarray
    source_bits: np.ndarray | None = None

    @property
    def source_buildings(self) -> np.ndarray:
        """The layout `[S, S]` bool the query came from (S = 256 for RadioMapSeer's grid)."""
        if self.source_bits is None:
            raise ValueError("this query was built without its source layout (use prepare_query)")
        return np.unpackbits(self.source_bits, axis=-1).astype(bool)


def layout_scene_id(buildings: np.ndarray) -> int:
    """A stable negative scene id for a layout `[H, W]` bool: -(first 7 bytes of the SHA-256 of
    its packed bits + 1). 7 bytes keep `scene_noise`'s seed arithmetic inside int64."""
    digest = hashlib.sha256(np.packbits(np.asarray(buildings, dtype=bool)).tobytes()).digest()
    return -(int.from_bytes(digest[:7], "big") + 1)


def sample_seed(seeds: Sequence[int], k: int) -> int:
    """The stage-1 seed of sample k: the bank's seeds first, then 1000 + k."""
    return int(seeds[k]) if k < len(seeds) else EXTRA_SEED_BASE + k


def layout_side(buildings: np.ndarray, resolution: int) -> int:
    """The side in pixels of a square layout that a model of `resolution` can serve: a multiple of
    `resolution` up to `MAX_LAYOUT_SIDE`. A layout always covers RadioMapSeer's 256 m block, so
    its pixel is 256 / side metres (1 m at 256, as `radiodiff simulate` reads it too)."""
    shape = np.shape(buildings)
    side = shape[0] if len(shape) == 2 and shape[0] == shape[1] else None
    if side is None or side % resolution or not resolution <= side <= MAX_LAYOUT_SIDE:
        raise UserError(f"buildings: layout has shape {shape}; expected a square layout of the 256 m block whose "
                        f"side is a multiple of the model's {resolution} pixels, up to {MAX_LAYOUT_SIDE} "
                        f"(e.g. {SOURCE_MAP_SIZE}x{SOURCE_MAP_SIZE}: 1 m per pixel)")
    return side


def prepare_query(buildings_source: np.ndarray, tx_source: tuple[int, int], cars_source: np.ndarray | None,
                  resolution: int) -> Query:
    """A `Query` at `resolution` from square masks `[S, S]` (bool, 0/1 or 0/255) of the 256 m block
    and a Tx pixel on them; S is a multiple of `resolution` (`layout_side`; 256 is RadioMapSeer's
    1 m grid).

    A Tx within 2 px of free space is snapped to it at S (`resolve_tx`); if its low-res pixel is
    a (majority) building, it moves to the nearest free low-res pixel within 2 px. Anything
    else (outside the map, deep inside a building, bad masks) is a `UserError`.
    """
    buildings = validate_mask(buildings_source, name="buildings", size=None)
    side = layout_side(buildings, resolution)
    cars = np.zeros_like(buildings) if cars_source is None else validate_mask(cars_source, name="cars", size=side)
    row, col = resolve_tx(buildings, int(tx_source[0]), int(tx_source[1]))
    factor = side // resolution
    low_buildings = majority(buildings, factor)
    try:
        low_tx = resolve_tx(low_buildings, row // factor, col // factor)
    except UserError:
        metres = SOURCE_MAP_SIZE / resolution
        raise UserError(f"Tx ({tx_source[0]}, {tx_source[1]}) falls inside a building at the model's {resolution}x"
                        f"{resolution} resolution ({metres:g} m pixels), with no free pixel within 2 px") from None
    return Query(buildings=low_buildings, tx=low_tx, cars=coverage(cars, factor),
                 source_bits=np.packbits(buildings, axis=-1))


def at_layout_resolution(gain: np.ndarray, queries: Sequence[Query]) -> np.ndarray:
    """Model-grid maps `[Q, H, W]` of `queries` on their layouts' own grid `[Q, S, S]` (S = 256 for
    RadioMapSeer layouts; one S per call) float32 in [0, 1]: bilinear between model pixels,
    exactly 0 on buildings (`upsample_gain`)."""
    return np.stack([upsample_gain(map_, query.source_buildings) for map_, query in zip(gain, queries)])


class FluxPredictor:
    """The served RadioDiff-Flux sampler: denoiser, VAE, optional fine-tuned tail and bank.

    Stage 1 (static condition, seeded noise -> `flux.t_mid`) runs only on bank misses, or
    always without a bank; stage 2 runs the tail of `flux_plan` with the full condition.
    """

    def __init__(self, *, model: LatentDiffusion, condition: ConditionConfig, flux: FluxConfig, resolution: int,
                 bank: MidpointBank | ServingBank | None = None, tail: ConditionalUNet | None = None) -> None:
        factor = model.vae.downsample_factor
        if SOURCE_MAP_SIZE % resolution or resolution % GRID or resolution % factor:
            raise ValueError(f"resolution {resolution} must divide {SOURCE_MAP_SIZE} and be a multiple of "
                             f"{GRID} (layout embedding) and {factor} (VAE)")
        # The UNet halves the latent at each level below the first; its norms need >= 2 x 2 there.
        halvings = 2 ** (model.unet.core.num_levels - 1)
        if (resolution // factor) % halvings or resolution // factor < 2 * halvings:
            raise ValueError(f"resolution {resolution} must be a multiple of {halvings * factor} and at least "
                             f"{2 * halvings * factor} for this denoiser ({halvings}x downsampling of the latent)")
        self.model, self.condition, self.flux = model, condition, flux
        self.resolution = resolution
        self.bank, self.tail = bank, tail
        self.plan = flux_plan(model.process, flux.t_mid, flux.prefix_steps, flux.tail_steps)
        # Set by `from_files` when `flux.use_tuned_tail` asks for a tail file that is not there:
        # the plain tail then serves (a different, less accurate map), which callers must report.
        self.missing_tail: Path | None = None
        self.bank_write_error: str | None = None  # why the last put failed (a read-only bank); None if it did not

    @property
    def tail_name(self) -> str:
        """Which stage-2 network serves: "tuned" (the fine-tuned tail) or "plain" (the denoiser)."""
        return "plain" if self.tail is None else "tuned"

    @classmethod
    def from_files(cls, *, ldm_path: Path, vae_path: Path, flux: FluxConfig, resolution: int,
                   tail_path: Path | None = None, bank_dir: Path | None = None,
                   serving_bank_dir: Path | None = None, device: str | None = None) -> FluxPredictor:
        """Load the model files once, onto `device` (a flag's spec; None: RADIODIFF_DEVICE, else
        `flux.device`) at `flux.precision`. The tail is used when `flux.use_tuned_tail` and
        `tail_path` exists; `bank_dir` (created on the first miss) holds this model's midpoints.
        A bank sealed by `build_bank`, or any bank when `serving_bank_dir` is given, is only
        read: misses go to `serving_bank_dir` (default `<bank_dir>-serving`, see
        `radiodiff.bank.serving`)."""
        trained = trained_resolution(Path(vae_path))
        if trained is not None and trained != resolution:
            raise UserError(f"{vae_path} was trained on {trained}x{trained} maps, but the params ask for "
                            f"{resolution}x{resolution} (prepare.resolution): set it back to {trained}, or retrain")
        placed = resolve_device(flux.device, device)
        precision = resolve_precision(flux.precision, placed)
        model, _, condition = load_ldm(Path(ldm_path), Path(vae_path), placed, precision)
        use_tail = flux.use_tuned_tail and tail_path is not None and Path(tail_path).is_file()
        tail = load_tail(Path(tail_path), Path(ldm_path), model) if use_tail else None
        try:
            bank = None if bank_dir is None else open_bank(bank_dir, bank_key(model, Path(ldm_path), flux, flux.t_mid),
                                                           serving_bank_dir)
            predictor = cls(model=model, condition=condition, flux=flux, resolution=resolution, bank=bank, tail=tail)
        except ValueError as exc:  # params that do not fit this model (t_mid beyond T, resolution)
            raise UserError(f"flux/prepare params do not fit {ldm_path}: {exc}") from None
        if flux.use_tuned_tail and not use_tail:  # asked for, absent: the caller must say so
            predictor.missing_tail = Path(tail_path) if tail_path is not None else None
        return predictor

    @property
    def device(self) -> torch.device:
        """Where the networks run."""
        return self.model.device

    def prepare_query(self, buildings_source: np.ndarray, tx_source: tuple[int, int],
                      cars_source: np.ndarray | None = None) -> Query:
        """`prepare_query` at this model's resolution."""
        return prepare_query(buildings_source, tx_source, cars_source, self.resolution)

    def predict(self, queries: Sequence[Query], *, samples: int = 1) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """Gain maps of `queries`: (mean `[Q, H, W]` float32 in [0, 1], per-pixel std over the
        samples `[Q, H, W]` when samples > 1 else None, bank stats).

        Stats count one lookup per distinct layout and sample: `bank_hits` (exact scene),
        `bank_nearest` (a similar stored layout), `bank_misses` (computed, then stored), and
        `bank_unstored` (misses the bank could not take: the map is served all the same,
        and `bank_write_error` says why). A call's misses go into the bank as one part file.
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if not queries:
            raise ValueError("predict needs at least one query")
        ids, layouts, rows = self._layouts(queries)
        stats = Counter({"bank_hits": 0, "bank_nearest": 0, "bank_misses": 0, "bank_unstored": 0})
        to_store: list[Midpoint] = []
        with torch.no_grad():
            cond = torch.from_numpy(np.stack([self._condition(q) for q in queries]))
            maps = [self._sample(ids, layouts, rows, cond, sample_seed(self.flux.seeds, k), stats, to_store)
                    for k in range(samples)]
        self._store(to_store, stats)
        stacked = torch.stack(maps).float().cpu().numpy()  # [K, Q, H, W]
        std = stacked.std(axis=0).astype(np.float32) if samples > 1 else None
        return stacked.mean(axis=0).astype(np.float32), std, dict(stats)

    def _layouts(self, queries: Sequence[Query]) -> tuple[list[int], np.ndarray, list[int]]:
        """Distinct layouts of the queries: (scene ids `[L]`, buildings `[L, H, W]`, layout of each query)."""
        ids: list[int] = []
        layouts: list[np.ndarray] = []
        rows = []
        for query in queries:
            if query.buildings.shape != (self.resolution, self.resolution):
                raise ValueError(f"query layout {query.buildings.shape} is not {self.resolution}x{self.resolution}")
            scene = layout_scene_id(query.buildings)
            if scene not in ids:
                ids.append(scene)
                layouts.append(np.asarray(query.buildings, dtype=bool))
            rows.append(ids.index(scene))
        return ids, np.stack(layouts), rows

    def _condition(self, query: Query) -> np.ndarray:
        return encode_condition(query.buildings, query.cars, query.tx[0], query.tx[1], self.condition.encodings)

    def _store(self, computed: list[Midpoint], stats: Counter) -> None:
        """Put the computed midpoints into the bank in one part; a bank that cannot be written
        (read-only, full disk) loses only the cache, never the answer."""
        if self.bank is None or not computed:
            return
        try:
            self.bank.put(computed)
            self.bank_write_error = None
        except (OSError, BankError) as exc:  # read-only, full, or a sealed bank given directly
            stats["bank_unstored"] += len(computed)
            self.bank_write_error = f"{self.bank.root}: {getattr(exc, 'strerror', None) or exc}"

    def _sample(self, ids: list[int], layouts: np.ndarray, rows: list[int], cond: torch.Tensor, seed: int,
                stats: Counter, to_store: list[Midpoint]) -> torch.Tensor:
        """Gain `[Q, H, W]` of one sample: midpoints of the layouts, then one batched stage 2."""
        midpoints = self._midpoints(ids, layouts, seed, stats, to_store)[rows]
        cond = cond.to(self.model.device)
        denoise_fn = None if self.tail is None else trajectory_denoiser(self.tail, cond)
        return stage2_decode(self.model, midpoints, cond, self.plan, denoise_fn=denoise_fn)[:, 0]

    def _midpoints(self, ids: list[int], layouts: np.ndarray, seed: int, stats: Counter,
                   to_store: list[Midpoint]) -> torch.Tensor:
        """Stage-1 midpoints `[L, 3, h, w]` of the layouts for `seed`: from the bank where it
        has them (exact scene first, then nearest), computed for the rest (appended to
        `to_store`, for the bank)."""
        found: list[np.ndarray | None] = [None] * len(ids)
        if self.bank is not None:
            for i, scene in enumerate(ids):
                found[i] = self.bank.get(scene, seed=seed)
                if found[i] is not None:
                    stats["bank_hits"] += 1
                    continue
                near = self.bank.nearest(layout_embedding(layouts[i]), self.flux.nearest_max_distance, seed=seed)
                if near is not None:
                    found[i] = near[2]
                    stats["bank_nearest"] += 1
        missing = [i for i, latent in enumerate(found) if latent is None]
        if missing:
            computed = self._stage1([ids[i] for i in missing], layouts[missing], seed)
            for i, latent in zip(missing, computed):
                found[i] = latent.numpy()
            if self.bank is not None:
                stats["bank_misses"] += len(missing)
                to_store.extend(Midpoint(ids[i], found[i], layout_embedding(layouts[i]), seed=seed) for i in missing)
        return torch.stack([torch.from_numpy(np.asarray(latent, dtype=np.float32)) for latent in found])

    def _stage1(self, ids: list[int], layouts: np.ndarray, seed: int) -> torch.Tensor:
        """Static midpoints `[L, 3, h, w]`, from the same per-scene noise `build_bank` uses."""
        cond = static_conditions(layouts, self.condition.channels)
        x_start = scene_noise(self.model.latent_shape(cond)[1:], ids, seed)
        return stage1_midpoint(self.model, cond, self.plan, x_start).cpu()
