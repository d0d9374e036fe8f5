"""The `radiodiff` command: one subcommand module each, registered here.

A `UserError` from any subcommand is printed as one line (`error: ...`) with exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from radiodiff.errors import RUN_FAILURE_EXIT, USER_ERROR_EXIT, RunFailure, UserError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from radiodiff.cli import bank, evaluate, predict, profile, serve, simulate, tune

    parser = argparse.ArgumentParser(prog="radiodiff", description="Radio maps by latent diffusion with midpoint reuse.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    simulate.add_parser(subparsers)
    bank.add_parser(subparsers)
    predict.add_parser(subparsers)
    evaluate.add_parser(subparsers)
    tune.add_parser(subparsers)
    serve.add_parser(subparsers)
    profile.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT
    except RunFailure as exc:  # out of memory, a diverged loss: one line, and not worth a retry
        print(f"error: {exc}", file=sys.stderr)
        return RUN_FAILURE_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
