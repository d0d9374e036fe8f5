"""`radiodiff bank`: inspect and maintain a midpoint bank directory.

    radiodiff bank verify PATH
    radiodiff bank stats PATH
    radiodiff bank compact PATH

`verify` reads every column of every part file with page checksums on, checks every
latent's sha256, that no entry is stored twice, and that the parts are exactly those the
bank's record (bank.json) lists, byte for byte; it prints `ok: F files, E entries`, or one
`error:` line naming the first problem (exit code 2). `stats` prints the bank's size and
entries per key. `compact` merges all parts into one, atomically, after verifying.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    """Register the `bank` subcommand (with `verify`, `stats` and `compact`)."""
    parser = subparsers.add_parser(
        "bank",
        help="inspect or compact a midpoint bank (cached RadioDiff-Flux latents)",
        description=__doc__.split("\n\n")[0],
    )
    actions = parser.add_subparsers(dest="bank_command", required=True)
    for name, run, text in (("verify", run_verify, "check every byte, key and file of a bank"),
                            ("stats", run_stats, "size and entries per key of a bank"),
                            ("compact", run_compact, "merge a bank's parts into one, atomically")):
        action = actions.add_parser(name, help=text, description="\n\n".join(__doc__.split("\n\n")[1:]),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        action.add_argument("path", type=Path, metavar="PATH", help="the bank directory")
        action.set_defaults(func=run)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def run_verify(args: argparse.Namespace) -> int:
    """Run `bank verify` for parsed arguments; a bad bank raises BankError (a UserError)."""
    from radiodiff.bank import verify_bank

    counts = verify_bank(args.path)
    print(f"ok: {_plural(counts['files'], 'file', 'files')}, {_plural(counts['entries'], 'entry', 'entries')}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """Run `bank stats`: one line of totals, then one line per key."""
    from radiodiff.bank.compact import bank_stats

    stats = bank_stats(args.path)
    state = "sealed" if stats["sealed"] else ("open" if stats["recorded"] else "no record")
    print(f"{args.path}: {_plural(stats['parts'], 'part', 'parts')}, {_plural(stats['entries'], 'entry', 'entries')}, "
          f"{stats['bytes'] / 1e6:.1f} MB, {state}, {_plural(stats['problems'], 'problem', 'problems')}"
          + (" (run `radiodiff bank verify`)" if stats["problems"] else ""))
    for key, entries in stats["keys"].items():
        model, sampler, t_mid = key.split("|")
        print(f"  model {model} sampler {sampler} t_mid {t_mid}: {_plural(entries, 'entry', 'entries')}")
    return 0


def run_compact(args: argparse.Namespace) -> int:
    """Run `bank compact`: verify, merge, switch the record, remove the old parts."""
    from radiodiff.bank.compact import compact_bank

    result = compact_bank(args.path)
    print(f"compacted {args.path}: {result['before']} -> {result['after']} part(s), "
          f"{_plural(result['entries'], 'entry', 'entries')}")
    return 0
