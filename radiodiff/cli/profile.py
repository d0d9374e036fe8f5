"""`radiodiff profile`: a profile as `dvc exp run` arguments.

    dvc exp run $(.venv/bin/radiodiff profile study)

Prints the `-S` overrides (Hydra syntax, one shell word each) that turn params.yaml into
`profiles/NAME.yaml`, so the profile runs as a DVC experiment and params.yaml, a tracked file,
stays as it is. `default` prints nothing (params.yaml itself). Profiles: `radiodiff profile --list`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    """Register the `profile` subcommand."""
    parser = subparsers.add_parser("profile", help="print the dvc exp run -S arguments of a profile",
                                   description="\n\n".join(__doc__.split("\n\n")[1:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="profile name (profiles/NAME.yaml), e.g. study or paper")
    parser.add_argument("--list", action="store_true", help="list the profiles")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="FILE",
                        help="the params file the experiment starts from (default: params.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from radiodiff.errors import UserError
    from radiodiff.profiles import available, dvc_set_args

    root = args.params.parent
    if args.list:
        print("\n".join(available(root)))
        return 0
    if args.name is None:
        raise UserError(f"name a profile ({', '.join(available(root))}), or --list them")
    print(" ".join(dvc_set_args(args.name, root, args.params.name)))
    return 0
