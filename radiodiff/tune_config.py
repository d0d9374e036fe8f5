"""The `tune:` section of params.yaml: an Optuna study over dotted params keys.

Parsed by `radiodiff.config.load_params` with the rest of the file (strict keys and types);
`radiodiff.tuning.space.check_space` then checks every parameter against the stage config
it changes. Nothing here imports Optuna, so loading params stays cheap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class TuneStage(enum.Enum):
    """The stage a trial runs; its validation metric is the objective."""

    TRAIN_LDM = "train_ldm"  # the denoiser, trained for `trial_steps` on the prepared data and VAE


class ParamKind(enum.Enum):
    """How Optuna samples one parameter."""

    FLOAT = "float"
    INT = "int"
    CATEGORICAL = "categorical"


class Direction(enum.Enum):
    """Whether the objective metric should go down or up."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class PrunerKind(enum.Enum):
    """Which pruner stops unpromising trials early."""

    MEDIAN = "median"  # stop a trial below the median of earlier trials at the same step
    NONE = "none"


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: `name` is a dotted params key such as `ldm.train.optim.lr`.

    float/int take `low`, `high` (inclusive), optional `log` (sample log-uniformly) and `step`;
    categorical takes `choices` (scalars: numbers, strings, booleans, null).
    """

    name: str
    type: ParamKind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.type is ParamKind.CATEGORICAL:
            self._check_categorical()
        else:
            self._check_range()

    def _check_categorical(self) -> None:
        if not self.choices or self.low is not None or self.high is not None:
            raise ValueError(f"{self.name}: categorical takes `choices` only, not low/high")
        if any(c is not None and not isinstance(c, bool | int | float | str) for c in self.choices):
            raise ValueError(f"{self.name}: choices must be scalars (number, string, boolean, null)")

    def _check_range(self) -> None:
        if self.low is None or self.high is None or self.choices:
            raise ValueError(f"{self.name}: {self.type.value} takes `low` and `high`, not choices")
        if not self.low < self.high:
            raise ValueError(f"{self.name}: need low < high, got {self.low}, {self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError(f"{self.name}: log sampling needs low > 0 and no step")
        if self.type is ParamKind.INT and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError(f"{self.name}: int bounds and step must be whole numbers")


@dataclass(frozen=True)
class PrunerConfig:
    """Median pruning fed with the validation metric at every `val_every` of a trial.

    startup_trials: trials that always run to the end before any pruning; warmup_steps:
    training steps of a trial before it may be pruned.
    """

    kind: PrunerKind = PrunerKind.MEDIAN
    startup_trials: int = 4
    warmup_steps: int = 0
    interval_steps: int = 1

    def __post_init__(self) -> None:
        if self.startup_trials < 0 or self.warmup_steps < 0 or self.interval_steps < 1:
            raise ValueError("need startup_trials >= 0, warmup_steps >= 0, interval_steps >= 1")


@dataclass(frozen=True)
class TuneConfig:
    """The Optuna study of `radiodiff tune`.

    - study, storage: study name inside a storage (resumable: more trials add to it): a sqlite
      file, a database URL shared by several workers, or `journal:FILE` on a shared filesystem
      (`radiodiff.tuning.storage`).
    - heartbeat_s, grace_s: a running trial's heartbeat; one silent for `grace_s` (its process
      was killed) is marked FAIL by the next trial and retried once (database storages).
    - stage, metric, direction: each trial trains `stage` for `trial_steps` optimizer steps,
      validating every `val_every`; the objective is validation `metric` at the last step.
    - seed: of the TPE sampler; `startup_trials` random trials come before TPE models the space.
    - n_trials: trials per invocation (`--n-trials` overrides).
    """

    study: str = "ldm"
    storage: str = "tune/study.db"
    stage: TuneStage = TuneStage.TRAIN_LDM
    metric: str = "nmse"
    direction: Direction = Direction.MINIMIZE
    n_trials: int = 20
    seed: int = 0
    startup_trials: int = 10
    trial_steps: int = 400
    val_every: int = 100
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    params: tuple[ParamSpec, ...] = ()
    heartbeat_s: int = 60
    grace_s: int = 180

    def __post_init__(self) -> None:
        if not self.study or not self.storage:
            raise ValueError("study and storage must not be empty")
        if not 1 <= self.heartbeat_s < self.grace_s:
            raise ValueError(f"need 1 <= heartbeat_s < grace_s, got {self.heartbeat_s} and {self.grace_s}")
        if self.n_trials < 1 or self.trial_steps < 1 or self.startup_trials < 0 or self.seed < 0:
            raise ValueError("need n_trials >= 1, trial_steps >= 1, startup_trials >= 0, seed >= 0")
        if not 1 <= self.val_every <= self.trial_steps:
            raise ValueError(f"val_every must be in 1..trial_steps ({self.trial_steps}), got {self.val_every}")
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"a parameter is listed twice: {names}")
