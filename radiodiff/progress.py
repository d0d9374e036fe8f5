"""Progress of a long loop, for a person at a terminal and for a log.

On a terminal, `Progress` is a tqdm bar. Anywhere else (Prefect pipes a stage's stderr, DVC
and CI write it to a log) a bar is one endless line of carriage returns, so it prints a plain
status line instead: when the loop starts, then at most every `interval_s` seconds, and when
it ends, e.g.

    train_ldm: step 400/1200 (33%) loss 0.0412 lr 8.1e-04 | 6.52 step/s, ETA 2m03s

`RADIODIFF_PROGRESS_SECONDS` sets the interval (default 30 s).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

DEFAULT_INTERVAL_S = 30.0


def interval_from_env() -> float:
    """The status-line interval: `RADIODIFF_PROGRESS_SECONDS` if it is a positive number, else 30 s."""
    try:
        value = float(os.environ.get("RADIODIFF_PROGRESS_SECONDS", DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if math.isfinite(value) and value > 0 else DEFAULT_INTERVAL_S


def duration(seconds: float) -> str:
    """`seconds` as `45s`, `2m03s` or `1h05m`."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0.0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return str(value)


class Progress:
    """Progress of `total` units of work (`unit`: step, map, method...), labelled `label`.

    `update(n, **fields)` counts n more units done and shows `fields` (loss=..., lr=...);
    `note(**fields)` changes the fields only. Nothing is shown when `enabled` is False (the
    other ranks of a DDP run, a quiet caller).
    """

    def __init__(self, total: int, label: str, *, unit: str = "step", initial: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.label, self.unit = int(total), label, unit
        self.done = self._start_done = int(initial)
        self.fields: dict[str, Any] = {}
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.interval_s = interval_from_env() if interval_s is None else interval_s
        self._clock = clock
        self._started = clock()
        self._last_line: float | None = None
        self._bar = None
        if enabled and _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc=label, unit=unit, file=self.stream)

    def update(self, n: int = 1, **fields: Any) -> None:
        self.done += n
        self.note(**fields)
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            now = self._clock()
            if self._last_line is None or now - self._last_line >= self.interval_s:
                self._print(now)

    def note(self, **fields: Any) -> None:
        """Set the fields shown with the count (None removes one)."""
        for key, value in fields.items():
            if value is None:
                self.fields.pop(key, None)
            else:
                self.fields[key] = value
        if self._bar is not None and fields:
            self._bar.set_postfix({k: _shown(v) for k, v in self.fields.items()}, refresh=False)

    def close(self) -> None:
        """End the report: close the bar, or print the last status line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled:
            self._print(self._clock(), final=True)
        self.enabled = False

    def line(self, now: float | None = None, *, final: bool = False) -> str:
        """The status line as it stands."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        rate = (self.done - self._start_done) / elapsed
        share = f" ({100.0 * self.done / self.total:.0f}%)" if self.total else ""
        text = f"{self.label}: {self.unit} {self.done}/{self.total}{share}"
        if self.fields:
            text += " " + " ".join(f"{key} {_shown(value)}" for key, value in self.fields.items())
        if final:
            return text + f" | done in {duration(elapsed)}"
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        return text + f" | {rate:.3g} {self.unit}/s, ETA {duration(eta)}"

    def _print(self, now: float, *, final: bool = False) -> None:
        self._last_line = now
        print(self.line(now, final=final), file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or minimal stream
        return False
