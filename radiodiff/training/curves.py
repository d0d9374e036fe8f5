"""Training curves as DVC plot data: the logged steps of a training loop as CSV files.

`Curve` is a training loop's `log(metrics, step)`: it forwards each call (to the tracking run)
and keeps the numbers by step, columns named without slashes (`train/loss` -> `train_loss`,
`val/nmse` -> `val_nmse`) because Vega field names treat them specially. `write(folder, stem)`
saves one file per group of columns, `{stem}_train.csv` and `{stem}_val.csv`: the groups are
logged on different steps, and a file with empty cells draws as broken lines. `dvc plots show`
and `dvc plots diff` draw them (dvc.yaml's top-level `plots`), so experiments' curves overlay.
A resumed run's curve starts where it resumed: the run that was killed logged the steps before.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from radiodiff.io import atomic_write_text

LogFn = Callable[..., None]


def column_name(key: str) -> str:
    """A metric key as a plot column: slashes and dots become underscores."""
    return key.replace("/", "_").replace(".", "_")


class Curve:
    """A `log(metrics, step)` that records numeric metrics by step and forwards to `log`."""

    def __init__(self, log: LogFn | None = None) -> None:
        self._log = log
        self.rows: dict[int, dict[str, float]] = {}
        self.columns: list[str] = []

    def __call__(self, metrics: Mapping[str, float | str], step: int | None = None) -> None:
        if self._log is not None:
            self._log(metrics, step)
        if step is None:
            return
        row = self.rows.setdefault(int(step), {})
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            name = column_name(key)
            if name not in self.columns:
                self.columns.append(name)
            row[name] = float(value)

    def groups(self) -> dict[str, list[str]]:
        """Columns by group, the text before their first underscore (`train`, `val`)."""
        grouped: dict[str, list[str]] = {}
        for name in self.columns:
            grouped.setdefault(name.split("_", 1)[0], []).append(name)
        return grouped

    def write(self, folder: Path, stem: str = "") -> list[Path]:
        """Write `folder/{stem}_{group}.csv` (`{group}.csv` without a stem) for each group,
        atomically; returns the paths."""
        paths = []
        for group, columns in self.groups().items():
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["step", *columns])
            for step in sorted(self.rows):
                row = self.rows[step]
                if all(c in row for c in columns):
                    writer.writerow([step, *(f"{row[c]:.6g}" for c in columns)])
            path = Path(folder) / (f"{stem}_{group}.csv" if stem else f"{group}.csv")
            atomic_write_text(path, buffer.getvalue())
            paths.append(path)
        return paths
