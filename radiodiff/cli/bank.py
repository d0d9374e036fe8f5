"""`radiodiff bank`: inspect a midpoint bank directory.

    radiodiff bank verify PATH

`verify` reads every part file of the bank at PATH in full and checks its schema version
and every latent's checksum; it prints `ok: F files, E entries`, or one `error:` line
naming the first bad file (exit code 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    """Register the `bank` subcommand (with its own `verify` subcommand)."""
    parser = subparsers.add_parser(
        "bank",
        help="inspect a midpoint bank (cached RadioDiff-Flux latents)",
        description=__doc__.split("\n\n")[0],
    )
    actions = parser.add_subparsers(dest="bank_command", required=True)
    verify = actions.add_parser(
        "verify",
        help="check every file and latent checksum of a bank",
        description="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("path", type=Path, metavar="PATH", help="the bank directory")
    verify.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """Run `bank verify` for parsed arguments; a bad bank raises BankError (a UserError)."""
    from radiodiff.bank import verify_bank

    counts = verify_bank(args.path)
    files, entries = counts["files"], counts["entries"]
    print(f"ok: {files} file{'' if files == 1 else 's'}, {entries} entr{'y' if entries == 1 else 'ies'}")
    return 0
