"""The methods `evaluate` compares, each a function of (seed, rows of the map set) -> gain maps.

Every generative method starts from the same per-scene noise (`scene_noise`), so for a given
seed the full trajectory, DDIM-N, Flux and its control differ only in what they do after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from radiodiff.artifacts.keys import bank_key
from radiodiff.bank import MidpointBank, layout_embedding
from radiodiff.config import FluxConfig
from radiodiff.data.conditions import TxEncoding, encode_condition
from radiodiff.diffusion.sampling import network_calls
from radiodiff.flux import (
    FluxPlan, flux_plan, full_plan, scene_noise, stage1_midpoint, stage2_decode, static_conditions,
)
from radiodiff.generation import LatentDiffusion, trajectory_denoiser
from radiodiff.models.unet import ConditionalUNet
from radiodiff.training.rng import seeded_generator

RunFn = Callable[[int, Sequence[int]], torch.Tensor]


@dataclass(frozen=True)
class MapSet:
    """The evaluated maps: `cond` `[N, C, H, W]`, `gain` `[N, 1, H, W]`, `maps` (scene id per row)."""

    cond: torch.Tensor
    gain: torch.Tensor
    maps: tuple[int, ...]

    def buildings(self, rows: Sequence[int]) -> np.ndarray:
        return self.cond[list(rows), 0].numpy() > 0


@dataclass(frozen=True)
class Method:
    """One row of the evaluate table. `unet_calls` per map: the sampler's network evaluations
    paid per query (a bank hit pays none of the prefix)."""

    name: str
    family: str  # full | reference | ddim | decoupled | flux | flux_tuned | flux_nearest | flux_nearest_any |
    # flux_cold | flux_cell | control | baseline | few_step_tuned (a sampler of a denoiser fine-tuned on it),
    # flow | flow_heun (two calls a step) | the Flux families of another objective's model suffixed with its label (flux_kc, flux_flow)
    run: RunFn
    unet_calls: int
    t_mid: int | None = None
    tail_steps: int | None = None
    stats: dict = field(default_factory=dict, compare=False)  # bank hits/misses of flux_nearest


@dataclass(frozen=True)
class Toolkit:
    """What the methods run on."""

    model: LatentDiffusion
    maps: MapSet
    flux: FluxConfig
    ldm_path: Path
    bank_dir: Path
    tail: ConditionalUNet | None
    exclude: frozenset[int]  # scenes `flux_nearest` may not use: the evaluated layouts themselves
    encodings: tuple[TxEncoding, ...]  # of the condition, to encode a representative Tx
    banks: dict[int, MidpointBank] = field(default_factory=dict, compare=False)  # opened once per t_mid
    label: str = ""  # names another objective's Flux rows apart (e.g. "kc": flux_kc_t600_tail1)
    few_step: ConditionalUNet | None = None  # the denoiser fine-tuned on its one-step sampler (tune_few_step)

    def family(self, base: str) -> str:
        """A Flux family name for this model: `base`, or `base_label`."""
        return f"{base}_{self.label}" if self.label else base

    def start(self, seed: int, rows: Sequence[int]) -> torch.Tensor:
        """The seeded start latents of `rows`, drawn on the CPU (the same on any device)."""
        return scene_noise(self.model.latent_shape(self.maps.cond[:1])[1:], [self.maps.maps[r] for r in rows], seed)

    def condition(self, rows: Sequence[int]) -> torch.Tensor:
        """The full conditions of `rows`, on the model's device."""
        return self.maps.cond[list(rows)].to(self.model.device)

    def plan(self, t_mid: int, tail_steps: int) -> FluxPlan:
        return flux_plan(self.model.process, t_mid, self.flux.prefix_steps, tail_steps)

    def bank(self, t_mid: int) -> MidpointBank:
        """The bank of `t_mid`, opened once: a server keeps its bank open between queries."""
        if t_mid not in self.banks:
            self.banks[t_mid] = MidpointBank(self.bank_dir, bank_key(self.model, self.ldm_path, self.flux, t_mid))
        return self.banks[t_mid]


def from_noise(kit: Toolkit, model: LatentDiffusion, steps: int, *, family: str) -> Method:
    """`model`'s whole sampler (`steps` steps of its process) from the seeded start latent with
    the full condition; the row is named `{family}_{steps}`, `{sampler}_full` for the full
    trajectory (family `full`) and `{sampler}_{steps}` for the published reference (family
    `reference`: RadioDiff's T = 100 steps)."""
    plan = full_plan(model.process, steps)

    def run(seed, rows):
        return stage2_decode(model, kit.start(seed, rows), kit.condition(rows), plan, generator=seeded_generator(seed))

    names = {"full": f"{model.process.name}_full", "reference": f"{model.process.name}_{steps}"}
    return Method(names.get(family, f"{family}_{steps}"), family, run, network_calls(model.process, steps))


def tuned_few_step(kit: Toolkit, steps: int) -> Method:
    """The sampler of `from_noise` with `steps` steps run by `kit.few_step`, the copy that had
    the Flux tail's extra fine-tuning on this sampler (row `{sampler}_{steps}_tuned`): the
    control that tells the cached midpoint's gain from the extra training's."""
    plan = full_plan(kit.model.process, steps)
    net = kit.few_step

    def run(seed, rows):
        cond = kit.condition(rows)
        return stage2_decode(kit.model, kit.start(seed, rows), cond, plan, generator=seeded_generator(seed),
                             denoise_fn=trajectory_denoiser(net, cond))

    return Method(f"{kit.model.process.name}_{steps}_tuned", "few_step_tuned", run, steps)


def flux_hit(kit: Toolkit, t_mid: int, tail_steps: int, *, tuned: bool) -> Method:
    """Stage 2 from the scene's own static bank midpoint (a hit), with the base or tuned tail."""
    plan = kit.plan(t_mid, tail_steps)
    tail = kit.tail if tuned else None

    def run(seed, rows):
        bank = kit.bank(t_mid)
        midpoint = torch.stack([torch.from_numpy(_require(bank.get(kit.maps.maps[r], seed=seed), kit.maps.maps[r]))
                                for r in rows])
        return _stage2(kit, midpoint, rows, plan, tail)

    family = kit.family("flux_tuned" if tuned else "flux")
    return Method(f"{family}_t{t_mid}_tail{tail_steps}", family, run, tail_steps, t_mid, tail_steps)


def flux_cold(kit: Toolkit, t_mid: int, tail_steps: int, *, tuned: bool) -> Method:
    """Stage 1 run now from the layout's own static condition, then the tail: the cold path,
    and what a bank hit gives for a layout the bank does not hold (family `flux_cold`)."""
    plan = kit.plan(t_mid, tail_steps)

    def run(seed, rows):
        return _stage2(kit, _own_midpoint(kit, seed, rows, plan), rows, plan, kit.tail if tuned else None)

    family = kit.family("flux_cold")
    return Method(f"{family}_t{t_mid}_tail{tail_steps}", family, run, plan.prefix_calls + tail_steps, t_mid, tail_steps)


def flux_nearest(kit: Toolkit, t_mid: int, tail_steps: int, *, tuned: bool, any_distance: bool = False) -> Method:
    """Stage 2 from the midpoint of the most similar *other* layout in the bank (an unseen
    layout's path); a layout with none within `flux.nearest_max_distance` computes its own
    stage 1 (a miss, the cold path). `any_distance` takes the nearest however far it is (family
    `flux_nearest_any`): what serving would give without the bound, to show where reuse breaks."""
    plan = kit.plan(t_mid, tail_steps)
    counts = {"nearest": 0, "miss": 0}
    bound = float("inf") if any_distance else kit.flux.nearest_max_distance

    def run(seed, rows):
        bank = kit.bank(t_mid)
        by_scene: dict[int, torch.Tensor] = {}  # one lookup per layout, as a server would do
        for row in rows:
            scene = kit.maps.maps[row]
            if scene in by_scene:
                continue
            found = bank.nearest(layout_embedding(kit.maps.buildings([row])[0]), bound, seed=seed,
                                 exclude=kit.exclude)
            counts["nearest" if found else "miss"] += 1
            own = torch.from_numpy(found[2]) if found else _own_midpoint(kit, seed, [row], plan)[0]
            by_scene[scene] = own.to(kit.model.device)
        midpoints = torch.stack([by_scene[kit.maps.maps[row]] for row in rows])
        return _stage2(kit, midpoints, rows, plan, kit.tail if tuned else None)

    family = kit.family("flux_nearest_any" if any_distance else "flux_nearest")
    return Method(f"{family}_t{t_mid}_tail{tail_steps}", family, run, tail_steps, t_mid, tail_steps, stats=counts)


def flux_cell(kit: Toolkit, t_mid: int, tail_steps: int, *, cell_px: int, tuned: bool) -> Method:
    """Midpoints keyed by layout and a coarse Tx cell: the prefix runs once per (layout, cell)
    under the full condition of a representative Tx (the free pixel nearest the cell centre)
    and serves every Tx in that cell. Cached like a warm bank: the prefix is paid on first use."""
    plan = kit.plan(t_mid, tail_steps)
    cache: dict[tuple[int, int, int, int], torch.Tensor] = {}

    def run(seed, rows):
        latents = []
        for row in rows:
            tx = divmod(int(kit.maps.cond[row, 1].argmax()), kit.maps.cond.shape[-1])
            key = (seed, kit.maps.maps[row], tx[0] // cell_px, tx[1] // cell_px)
            if key not in cache:
                cond = _representative_condition(kit, row, key[2:], cell_px)
                cache[key] = stage1_midpoint(kit.model, cond, plan, kit.start(seed, [row]))[0]
            latents.append(cache[key])
        return _stage2(kit, torch.stack(latents), rows, plan, kit.tail if tuned else None)

    family = kit.family("flux_cell_tuned" if tuned else "flux_cell")
    return Method(f"{family}_t{t_mid}_tail{tail_steps}", family, run, tail_steps, t_mid, tail_steps)


def _representative_condition(kit: Toolkit, row: int, cell: tuple[int, int], cell_px: int) -> torch.Tensor:
    """The full condition `[1, C, H, W]` of the free pixel nearest the centre of `cell`."""
    buildings = kit.maps.buildings([row])[0]
    cars = kit.maps.cond[row, 2].numpy()
    rows, cols = np.mgrid[0:cell_px, 0:cell_px]
    rows, cols = rows + cell[0] * cell_px, cols + cell[1] * cell_px
    free = ~buildings[rows, cols]
    centre = (cell_px - 1) / 2
    distance = np.where(free, np.hypot(rows - cell[0] * cell_px - centre, cols - cell[1] * cell_px - centre), np.inf)
    pick = np.unravel_index(int(np.argmin(distance)), distance.shape)
    cond = encode_condition(buildings, cars, int(rows[pick]), int(cols[pick]), kit.encodings)
    return torch.from_numpy(cond)[None]


def control(kit: Toolkit, t_mid: int, tail_steps: int) -> Method:
    """The same seeded prefix but under the full condition (not cacheable), then the same tail:
    isolates what the static-only prefix costs."""
    plan = kit.plan(t_mid, tail_steps)

    def run(seed, rows):
        midpoint = stage1_midpoint(kit.model, kit.condition(rows), plan, kit.start(seed, rows))
        return _stage2(kit, midpoint, rows, plan, None)

    family = kit.family("control")
    return Method(f"{family}_t{t_mid}_tail{tail_steps}", family, run, plan.prefix_calls + tail_steps, t_mid, tail_steps)


def supervised(name: str, predict: Callable[[torch.Tensor], torch.Tensor], kit: Toolkit) -> Method:
    """The supervised baseline: one deterministic pass (every seed gives the same maps), fed
    conditions on the model's device."""
    return Method(name, "baseline", lambda seed, rows: predict(kit.condition(rows)), 0)


def _own_midpoint(kit: Toolkit, seed: int, rows: Sequence[int], plan: FluxPlan) -> torch.Tensor:
    static = static_conditions(kit.maps.buildings(rows), kit.maps.cond.shape[1])
    return stage1_midpoint(kit.model, static, plan, kit.start(seed, rows))


def _stage2(kit: Toolkit, midpoint: torch.Tensor, rows: Sequence[int], plan: FluxPlan,
            tail: ConditionalUNet | None) -> torch.Tensor:
    cond = kit.condition(rows)
    denoise = trajectory_denoiser(tail, cond) if tail is not None else None
    return stage2_decode(kit.model, midpoint, cond, plan, denoise_fn=denoise)


def _require(latent: np.ndarray | None, scene: int) -> np.ndarray:
    if latent is None:
        from radiodiff.errors import UserError

        raise UserError(f"the bank has no midpoint of test scene {scene}: run build_bank over the test split")
    return latent
