"""The key a cached latent is valid for: model, sampler and midpoint time."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BankKey:
    """What a cached latent is valid for; lookups compare all three exactly.

    `t_mid` is the diffusion time of the midpoint: a step index such as 600 for DDPM/DDIM
    models, or a continuous time in (0, 1]; it is stored as float64.
    """

    model_hash: str
    sampler_hash: str
    t_mid: float

    def __post_init__(self) -> None:
        if not (isinstance(self.model_hash, str) and self.model_hash):
            raise ValueError(f"model_hash must be a non-empty string, got {self.model_hash!r}")
        if not (isinstance(self.sampler_hash, str) and self.sampler_hash):
            raise ValueError(f"sampler_hash must be a non-empty string, got {self.sampler_hash!r}")
        if not math.isfinite(float(self.t_mid)):
            raise ValueError(f"t_mid must be finite, got {self.t_mid!r}")
        object.__setattr__(self, "t_mid", float(self.t_mid))  # 600 and 600.0 are one key

    def matches(self, row: dict) -> bool:
        """Whether a stored row (with model_hash, sampler_hash, t_mid) was made under this key."""
        stored = (row["model_hash"], row["sampler_hash"], row["t_mid"])
        return stored == (self.model_hash, self.sampler_hash, self.t_mid)
