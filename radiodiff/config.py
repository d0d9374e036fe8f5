"""Typed, frozen configuration: one dataclass per pipeline stage, one section of params.yaml each.

`load_params` parses params.yaml once, at the edge, and rejects unknown keys and wrong types
with a one-line `UserError`. Defaults live only here, in the dataclasses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from radiodiff.errors import UserError
from radiodiff.typed_yaml import build

SOURCE_MAP_SIZE = 256  # RadioMapSeer maps are 256 x 256 pixels of 1 m


class TargetSource(enum.Enum):
    """Where the training targets come from."""

    SIMULATE = "simulate"  # the project's propagation simulator on the shipped layouts
    RADIOMAPSEER = "radiomapseer"  # gain PNGs of a full RadioMapSeer copy


@dataclass(frozen=True)
class SplitSizes:
    """How many maps of each RadioUNet split to use (train 501, val 100, test 99 at most)."""

    train: int = 120
    val: int = 16
    test: int = 16

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
    tx_per_map: int = 16  # drawn per map (seeded) from its 80 published Tx sites
    resolution: int = 64  # output pixels per side: area-average of the 256 m map
    dynamic: bool = False  # cars as obstacles (targets from carsDPM / the simulator's car model)
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

    @property
    def pixel_size_m(self) -> float:
        """Side of one output pixel in metres."""
        return SOURCE_MAP_SIZE / self.resolution


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    prepare: PrepareConfig = field(default_factory=PrepareConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Parse and check a params file; any problem is a one-line `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return build(Params, raw, where=str(path))
