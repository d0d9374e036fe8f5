"""The command line shared by the benchmarks that read a finished pipeline run (`make demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def after_run_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with `--project` (the run's folder), `--params` (default: the project's) and
    `--out` (also write the rows as JSON there); the benchmark adds its own choices."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=Path("."), help="a project after a pipeline run")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: the project's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    return parser
