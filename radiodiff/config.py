"""Typed, frozen configuration: one dataclass per pipeline stage, one section of params.yaml each.

`load_params` parses params.yaml once, at the edge, and rejects unknown keys and wrong types
with a one-line `UserError`. Defaults live only here, in the dataclasses. A leaf: it imports
no torch and no network, so every stage (and `prepare`, which needs none) parses params cheaply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from radiodiff.devices import check_device_spec
from radiodiff.errors import UserError
from radiodiff.options import (
    SPLITS, AttentionKind, Augmentation, LossWeighting, Precision, Preconditioning, Prediction, ReconKind, ScheduleKind,
    TailLoss, TargetSource, TxEncoding,
)
from radiodiff.training.config import LoopConfig
from radiodiff.tune_config import TuneConfig
from radiodiff.typed_yaml import build, cut

SOURCE_MAP_SIZE = 256  # RadioMapSeer maps are 256 x 256 pixels of 1 m


@dataclass(frozen=True)
class SplitSizes:
    """How many maps of each RadioUNet split to use (train 501, val 100, test 99 at most)."""

    train: int = 160
    val: int = 16
    test: int = 24

    def __post_init__(self) -> None:
        limits = {"train": 501, "val": 100, "test": 99}
        for name, limit in limits.items():
            if not 0 <= getattr(self, name) <= limit:
                raise ValueError(f"{name} must be in 0..{limit}, got {getattr(self, name)}")


@dataclass(frozen=True)
class PrepareConfig:
    """The `prepare` stage: which maps and Tx, at what resolution, with which targets."""

    source: TargetSource = TargetSource.SIMULATE
    radiomapseer_dir: str | None = None  # a full RadioMapSeer folder, for source = radiomapseer
    maps: SplitSizes = field(default_factory=SplitSizes)
    tx_per_map: int = 12  # drawn per map (seeded) from its 80 published Tx sites
    resolution: int = 64  # output pixels per side: area-average of the 256 m map
    # Share of each map's Tx that also get a traffic sample: the same Tx with the map's cars as
    # obstacles (targets from carsDPM / the simulator's car model). 0 = static only.
    dynamic: float = 0.0
    seed: int = 0
    workers: int = 2  # parallel map workers (Dask processes under Prefect)

    def __post_init__(self) -> None:
        if self.resolution <= 0 or SOURCE_MAP_SIZE % self.resolution:
            raise ValueError(f"resolution must divide {SOURCE_MAP_SIZE}, got {self.resolution}")
        if not 1 <= self.tx_per_map <= 80:
            raise ValueError(f"tx_per_map must be in 1..80, got {self.tx_per_map}")
        if self.source is TargetSource.RADIOMAPSEER and not self.radiomapseer_dir:
            raise ValueError("source radiomapseer needs radiomapseer_dir")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.seed < 0:  # numpy's seed sequences take no negative entropy
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.dynamic <= 1.0:
            raise ValueError(f"dynamic is the share of Tx with a traffic sample, in [0, 1]; got {self.dynamic}")

    @property
    def cars_per_map(self) -> int:
        """Tx per map that also get a traffic (cars) sample: at least one when `dynamic` > 0."""
        return 0 if self.dynamic == 0 else max(1, round(self.dynamic * self.tx_per_map))

    @property
    def pixel_size_m(self) -> float:
        """Side of one output pixel in metres."""
        return SOURCE_MAP_SIZE / self.resolution


@dataclass(frozen=True)
class ConditionConfig:
    """How the Tx reaches the networks: geometric encodings appended to [buildings, tx, cars].

    Read by train_ldm and train_baseline alike, so the two models see the same inputs.
    """

    encodings: tuple[TxEncoding, ...] = (TxEncoding.LOG_DISTANCE, TxEncoding.LOS, TxEncoding.LOS_LOG_DISTANCE,
                                         TxEncoding.CAR_SHADOW)

    @property
    def channels(self) -> int:
        """Number of condition channels."""
        return 3 + len(self.encodings)


@dataclass(frozen=True)
class DataLoaderConfig:
    """Batching of one training stage."""

    batch_size: int = 32
    workers: int = 1  # DataLoader worker processes (the arrays are memory-mapped)
    # Propagation has no preferred direction, so a rotated or mirrored city with its Tx and
    # map turned alike is another valid sample: 8x the layouts a model sees.
    augment: Augmentation = Augmentation.NONE

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError(f"need batch_size >= 1 and workers >= 0, got {self}")


@dataclass(frozen=True)
class VAEConfig:
    """The `train_vae` stage: KL autoencoder gain [1,H,W] -> latent [3,H/4,W/4]."""

    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    latent_channels: int = 3
    dropout: float = 0.0
    kl_weight: float = 1e-6  # RadioDiff's value
    recon_loss: ReconKind = ReconKind.L1
    data: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    train: LoopConfig = field(default_factory=lambda: LoopConfig(total_steps=1000))


@dataclass(frozen=True)
class UNetConfig:
    """The conditional latent UNet (RadioDiff's denoiser)."""

    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    cond_base_channels: int = 16
    attention: AttentionKind = AttentionKind.NONE  # window: Swin-style window attention
    window_size: int = 4
    fft_filter: bool = False  # RadioDiff's learnable frequency-domain filter in the bottleneck
    dropout: float = 0.0


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and prediction target; shared by training and every sampler."""

    schedule: ScheduleKind = ScheduleKind.LINEAR
    num_steps: int = 1000
    prediction: Prediction = Prediction.V  # kc: RadioDiff's decoupled objective; flow: rectified flow (both continuous t)
    preconditioning: Preconditioning = Preconditioning.MMSE  # of the two heads, for kc only
    # num_steps is T: the schedule's length, and the unit of every t_mid in params (kc reads t_mid / T)


@dataclass(frozen=True)
class LDMConfig:
    """The `train_ldm` stage: conditional denoiser on the VAE's latent."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    condition_dropout: float = 0.2  # zero the dynamic channels, so one net serves the static prefix
    # none: every map counts the same in the loss; energy: a map counts by 1 / mean(gain^2), as
    # it does in the mean NMSE (radiodiff.diffusion.losses.energy_weights); traffic: a map with
    # cars counts 3x (losses.traffic_weights); min_snr: a draw at time t counts its x0 error
    # min(SNR(t), 5) (losses.min_snr_weights; eps, v and x0 only: ldm_alt's kc and flow then
    # train unweighted)
    loss_weighting: LossWeighting = LossWeighting.NONE
    sample_steps: int = 5  # DDIM steps for validation samples and figures
    data: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    train: LoopConfig = field(default_factory=lambda: LoopConfig(total_steps=1000))

    def __post_init__(self) -> None:
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if not 1 <= self.sample_steps <= self.diffusion.num_steps:
            raise ValueError(f"sample_steps must be in 1..{self.diffusion.num_steps}")
        if self.loss_weighting is LossWeighting.MIN_SNR and not self.diffusion.prediction.on_schedule:
            raise ValueError(f"loss_weighting min_snr needs prediction eps, v or x0, got {self.diffusion.prediction.value}")


@dataclass(frozen=True)
class AlternativeObjectivesConfig:
    """`train_ldm_alt`: the same denoiser, data and budget as `ldm` trained once more on each
    other objective, so `evaluate` compares them all on the same maps (v with DDIM against
    RadioDiff's decoupled kc with its sampler and flow matching with Euler steps)."""

    predictions: tuple[Prediction, ...] = (Prediction.KC, Prediction.FLOW)
    # Training steps of each alternative; null: ldm's own, the equal budget a fair comparison
    # needs. The demo trains them shorter (its rows show the objectives run, not their ranking).
    total_steps: int | None = None

    def derive(self, ldm: LDMConfig) -> dict[Prediction, LDMConfig]:
        """`ldm` with each alternative prediction (the network's heads follow the objective) and
        `total_steps` if set, in params order; each must differ from ldm's and from the others."""
        if self.total_steps is not None:
            ldm = replace(ldm, train=replace(ldm.train, total_steps=self.total_steps))
        served = ldm.diffusion.prediction
        if served in self.predictions:
            raise ValueError(f"ldm_alt.predictions must not repeat ldm's prediction ({served.value})")
        if len(set(self.predictions)) != len(self.predictions):
            raise ValueError(f"ldm_alt.predictions lists an objective twice: {[p.value for p in self.predictions]}")
        return {p: _with_prediction(ldm, p) for p in self.predictions}


def _with_prediction(ldm: LDMConfig, prediction: Prediction) -> LDMConfig:
    """`ldm` on another objective. Min-SNR weighting is defined on a noise schedule only, so an
    objective off one (kc, flow) trains its maps equally weighted."""
    weighting = ldm.loss_weighting
    if weighting is LossWeighting.MIN_SNR and not prediction.on_schedule:
        weighting = LossWeighting.NONE
    return replace(ldm, diffusion=replace(ldm.diffusion, prediction=prediction), loss_weighting=weighting)


@dataclass(frozen=True)
class BaselineConfig:
    """The `train_baseline` stage: RadioUNet-style supervised UNet, condition -> gain.

    compute_parity: train for at least the generative chain's measured training time
    (train_vae + train_ldm + tune_tail, `radiodiff.stages.parity`); `train.total_steps` is then
    a floor, and a run that finishes its plan early goes on at `train.optim.min_lr` (so that
    must be above 0). False trains exactly `train.total_steps`.
    """

    compute_parity: bool = False
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 1
    dropout: float = 0.0
    data: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    train: LoopConfig = field(default_factory=lambda: LoopConfig(total_steps=1000))

    def __post_init__(self) -> None:
        if self.compute_parity and not self.train.optim.min_lr > 0:
            raise ValueError("compute_parity trains any steps past its plan at train.optim.min_lr: set it above 0")


@dataclass(frozen=True)
class TailTuneConfig:
    """Dynamic conditional fine-tuning: a copy of the denoiser trained on the Flux tail only,
    fed with the static bank midpoints of the training scenes (the paper's third ingredient).
    `loss` is what it learns from (`TailLoss`): the objective's loss on the path, or the
    served sampler's decoded maps scored by NMSE through the frozen VAE decoder. The decoded
    loss trains the served t_mid only; `path_loss_weight` adds that times the path loss at
    every t_mid of the bank, which keeps the tail a denoiser for the others (and for tails of
    more calls) at the cost of a second pass a step."""

    batch_size: int = 32
    loss: TailLoss = TailLoss.DIFFUSION
    path_loss_weight: float = 0.0
    train: LoopConfig = field(default_factory=lambda: LoopConfig(total_steps=400))

    def __post_init__(self) -> None:
        if not self.path_loss_weight >= 0:
            raise ValueError(f"path_loss_weight must be >= 0, got {self.path_loss_weight}")
        if self.path_loss_weight and self.loss is not TailLoss.DECODED:
            raise ValueError("path_loss_weight adds to the decoded loss: set loss: decoded, or the weight to 0")


@dataclass(frozen=True)
class FluxConfig:
    """The midpoint bank (`build_bank`) and the two-stage sampler that reads it.

    t_mid: step index of the midpoint (T-1 = pure noise, 0 = last noisy step); the bank holds
    one static midpoint per scene, seed and entry of `t_mids`. `t_mid` is the one served by
    `radiodiff predict` and registered; `evaluate` sweeps all of `t_mids`.
    """

    t_mids: tuple[int, ...] = (800, 600, 400, 200)
    t_mid: int = 600
    prefix_steps: int = 5  # DDIM calls of stage 1, T-1 -> t_mid (offline, so not the bottleneck)
    tail_steps: int = 1  # DDIM calls of stage 2, t_mid -> clean (paid per query)
    seeds: tuple[int, ...] = (0, 1, 2)
    splits: tuple[str, ...] = ("train", "test")  # train midpoints feed the tail fine-tuning
    nearest_max_distance: float = 0.15  # RMS building-occupancy difference of the 8x8 embedding
    batch_size: int = 64
    workers: int = 2
    use_tuned_tail: bool = True  # serve with the fine-tuned tail (evaluate measures both)
    device: str = "auto"  # where build_bank, predict and the served model sample (radiodiff.devices)
    precision: Precision = Precision.FP32  # their autocast; bf16 only once measured against fp32
    tail_tune: TailTuneConfig = field(default_factory=TailTuneConfig)

    def __post_init__(self) -> None:
        if self.t_mid not in self.t_mids:
            raise ValueError(f"t_mid {self.t_mid} must be one of t_mids {list(self.t_mids)}")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        if not all(0 <= seed < 2**31 for seed in self.seeds):  # numpy/torch seeds; scene_noise adds to them
            raise ValueError(f"seeds must be in 0..2**31-1, got {list(self.seeds)}")
        if not set(self.splits) <= set(SPLITS):  # a split names the dataset files it reads
            raise ValueError(f"splits must be among {list(SPLITS)}, got {list(self.splits)}")
        if self.prefix_steps < 1 or self.tail_steps < 1:
            raise ValueError("prefix_steps and tail_steps must be >= 1")
        if not 0.0 <= self.nearest_max_distance <= 1.0:  # an RMS difference of occupancies in [0, 1]
            raise ValueError(f"nearest_max_distance must be in [0, 1], got {self.nearest_max_distance}")
        check_device_spec(self.device, "flux.device")


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` stage: every method on the same test maps, in one run.

    The maps are the first `tx_per_scene` Tx of `scenes` test layouts spread over the split; timings are
    medians over `timing_repeats` rounds that interleave the methods (a noisy shared machine).
    """

    scenes: int = 6
    tx_per_scene: int = 6
    ddim_steps: tuple[int, ...] = (1, 2, 5, 10, 20)
    tail_steps: tuple[int, ...] = (1, 2, 5)
    batch_size: int = 48  # the "full batch" of the throughput timings
    timing_maps: int = 4  # batch-1 maps timed per method and round (the full DDPM: 1)
    timing_repeats: int = 3
    consistency_steps: int = 20  # DDIM grid on which midpoint similarity is traced over t
    tx_cell_px: int = 16  # side of the Tx cells of the cell-keyed Flux midpoints, in pixels
    # The published reference (RadioDiff at T = 100 steps) as a row: the served model's own
    # sampler with this many steps, beside the full T-step trajectory.
    reference_steps: int = 100
    traffic_per_scene: int = 2  # traffic pairs (same Tx, with and without cars) per evaluated layout
    # new_layout's distance axis: `edited_scenes` banked (train) layouts, each with these shares of
    # its building area removed, as layouts the bank has never seen (0 scenes: none)
    edited_scenes: int = 4
    edit_shares: tuple[float, ...] = (0.1, 0.3, 0.6, 1.0)
    device: str = "auto"  # where every method runs (radiodiff.devices)
    precision: Precision = Precision.FP32  # autocast of the samplers and the baseline

    def __post_init__(self) -> None:
        check_device_spec(self.device, "evaluate.device")
        if self.reference_steps < 1 or self.traffic_per_scene < 0:
            raise ValueError(f"need reference_steps >= 1 and traffic_per_scene >= 0, got {self.reference_steps}, "
                             f"{self.traffic_per_scene}")
        if self.edited_scenes < 0 or not all(0.0 < share <= 1.0 for share in self.edit_shares):
            raise ValueError(f"need edited_scenes >= 0 and every edit share in (0, 1], got {self.edited_scenes}, "
                             f"{list(self.edit_shares)}")
        if self.edited_scenes and not self.edit_shares:
            raise ValueError("evaluate.edit_shares is empty: give at least one share, or set edited_scenes: 0")


@dataclass(frozen=True)
class DaskConfig:
    """Where fan-out work runs (prepare per map, build_bank per scene). No stage lists this
    section in dvc.yaml: moving to another cluster changes no output, so it re-runs nothing."""

    address: str | None = None  # a running Dask scheduler (tcp://host:8786); null: a local cluster


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    ldm: LDMConfig = field(default_factory=LDMConfig)
    ldm_alt: AlternativeObjectivesConfig = field(default_factory=AlternativeObjectivesConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    flux: FluxConfig = field(default_factory=FluxConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)  # read by `radiodiff tune`, no DVC stage

    def __post_init__(self) -> None:
        self.ldm_alt.derive(self.ldm)  # every objective once


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading `1e-05` as a float (YAML 1.2): `dvc exp run -S` writes
    floats that way, and YAML 1.1 would make them strings."""


_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
                                    list("-+0123456789"))


MAX_PARAMS_BYTES = 256 * 1024  # the shipped files are ~6 KB; a bigger one is a mistake, refused before parsing
MAX_PARAMS_NODES = 20_000  # YAML nodes after aliases expand (the shipped file has a few hundred)


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes `node` stands for once every alias is expanded, memoised on node identity:
    an alias is the same node object, so this is linear in the document while the expansion
    (what a builder walks) can be exponential."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once here, and the builder refuses its type
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_nodes(k, sizes) + _expanded_nodes(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_nodes(item, sizes) for item in node.value)
    else:
        total = 1
    sizes[id(node)] = min(total, MAX_PARAMS_NODES + 1)  # capped: the count itself cannot blow up
    return sizes[id(node)]


def _parse_yaml(text: str) -> object:
    """YAML text to plain values, refusing documents whose aliases expand past MAX_PARAMS_NODES."""
    loader = _ParamsLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_nodes(node, {}) > MAX_PARAMS_NODES:
            raise UserError(f"more than {MAX_PARAMS_NODES} values once YAML aliases expand (an alias bomb?)")
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Parse and check a params file; any problem is a one-line `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file not found: {path}")
    size = path.stat().st_size
    if size > MAX_PARAMS_BYTES:
        raise UserError(f"{path}: {size} bytes, more than a params file can be ({MAX_PARAMS_BYTES} bytes)")
    try:
        raw = _parse_yaml(path.read_text())  # a SafeLoader: builds no objects
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not valid YAML ({cut(first_line)})") from None
    return build(Params, raw, where=str(path))
