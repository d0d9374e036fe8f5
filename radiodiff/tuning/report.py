"""A study as rows (for the printed table and the tracker) and as figures: optimisation history
and parameter importances (Optuna's matplotlib plots)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from radiodiff.tuning.tracker import COMPLETE, FAILED, PRUNED

_STATES = {TrialState.COMPLETE: COMPLETE, TrialState.PRUNED: PRUNED, TrialState.FAIL: FAILED}


@dataclass(frozen=True)
class TrialRow:
    """One trial: state, objective value (the last reported one if pruned), the last step it
    reported at, wall time in seconds and its sampled params by dotted key."""

    number: int
    state: str
    value: float | None
    step: int | None
    seconds: float | None
    params: dict[str, Any]


def trial_rows(trials: Iterable[FrozenTrial]) -> list[TrialRow]:
    """Rows of finished or running trials (state names: complete, pruned, failed, running...)."""
    rows = []
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        value = trial.value if trial.value is not None else (trial.intermediate_values[steps[-1]] if steps else None)
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append(TrialRow(trial.number, _STATES.get(trial.state, trial.state.name.lower()), value,
                             steps[-1] if steps else None, seconds, dict(trial.params)))
    return rows


def format_table(rows: Sequence[TrialRow], metric: str, best: TrialRow | None) -> str:
    """The trials as a plain-text table, best one marked with `*`."""
    keys = sorted({key for row in rows for key in row.params})
    header = ["", "trial", "state", metric, "step", "seconds", *keys]
    lines = [header]
    for row in rows:
        mark = "*" if best is not None and row.number == best.number else ""
        lines.append([mark, str(row.number), row.state, _fmt(row.value), _fmt(row.step), _fmt(row.seconds, ".1f"),
                      *(_fmt(row.params.get(key)) for key in keys)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec) if math.isfinite(value) else str(value)
    return str(value)


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """`optimization_history.png` once a trial completed, `param_importances.png` from two
    complete trials on (importances need a spread of values); matplotlib figures by file name."""
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures = {}
    with warnings.catch_warnings():
        # The matplotlib backend of optuna.visualization is marked experimental.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            figures["optimization_history.png"] = optuna_plots.plot_optimization_history(study).figure
        if len(complete) >= 2 and study.best_trial.params:
            importance = optuna_plots.plot_param_importances(study).figure
            importance.tight_layout()  # the dotted params keys are long y labels
            figures["param_importances.png"] = importance
    return figures
