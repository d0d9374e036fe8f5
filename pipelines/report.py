"""DVC stage `report`: docs/RESULTS.md from the run's own metrics and plot data (nothing typed
by hand; the README links it)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from radiodiff.artifacts.layout import METRICS_DIR, PLOTS_DIR, REPORT_FILE
from radiodiff.evaluation.report import render_report
from radiodiff.io import atomic_write_text


def _commit() -> str:
    """The checkout's commit, `-dirty` when a tracked file differs from it. The report itself
    does not count: DVC removes a stage's outputs before it runs, so it always differs."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = git("describe", "--always")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){REPORT_FILE}")
    except OSError:
        return "unknown"
    if not commit:
        return "unknown (not a git checkout)"
    return f"{commit}-dirty" if changed else commit


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file the run used (default: params.yaml)")
    args = parser.parse_args(argv)
    evaluate = METRICS_DIR / "evaluate.json"
    device = json.loads(evaluate.read_text()).get("device", "?") if evaluate.is_file() else "?"
    run = {"written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "code": _commit(),
           "profile": os.environ.get("RADIODIFF_PROFILE", args.params), "device": device,
           "Python": sys.version.split()[0]}
    atomic_write_text(REPORT_FILE, render_report(METRICS_DIR, PLOTS_DIR, run=run,
                                                 figures_link=os.path.relpath(PLOTS_DIR, REPORT_FILE.parent)))
    print(f"wrote {REPORT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
