"""What the tuning loop tells a tracker (MLflow lives in `radiodiff.tracking.study`); the no-op
tracker here lets tests and `--no-track` runs tune without a tracking store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any, Protocol

# A trial's final state, as trackers record it (Optuna's COMPLETE / PRUNED / FAIL).
COMPLETE, PRUNED, FAILED = "complete", "pruned", "failed"


class TrialRecord(Protocol):
    """One trial's run: its curves, then its outcome."""

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics at a training step (the stage's `log` callable)."""

    def finish(self, state: str, value: float | None) -> None:
        """Record the trial's state (COMPLETE, PRUNED or FAILED) and objective value."""


class StudyRun(Protocol):
    """The study's run: one nested trial run each, and the summary at the end of a session."""

    def trial(self, number: int, params: Mapping[str, Any]) -> ContextManager[TrialRecord]:
        """Open trial `number`'s run with its sampled params; close it when the trial ends."""

    def log_summary(self, *, best_params: Mapping[str, Any] | None, best_value: float | None,
                    counts: Mapping[str, int], figures: Mapping[str, Any], files: Sequence[Path]) -> None:
        """Record the best trial so far, trial counts by state, figures and output files."""


class StudyTracker(Protocol):
    """Opens (or re-opens, for a resumed study) the run of a study."""

    def study(self, name: str, uid: str, config: Any) -> ContextManager[StudyRun]:
        """The run of study `name`; `uid` identifies it across sessions, `config` is its tune section."""


class _NullRecord:
    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def finish(self, state: str, value: float | None) -> None:
        pass


class _NullRun:
    @contextlib.contextmanager
    def trial(self, number: int, params: Mapping[str, Any]) -> Iterator[TrialRecord]:
        yield _NullRecord()

    def log_summary(self, **_: Any) -> None:
        pass


class NullTracker:
    """A tracker that records nothing."""

    @contextlib.contextmanager
    def study(self, name: str, uid: str, config: Any) -> Iterator[StudyRun]:
        yield _NullRun()
