"""`radiodiff serve`: the registered RadioDiff-Flux model over HTTP, behind a request guard.

    radiodiff serve [--model URI] [--host HOST] [--port PORT] [--max-body-mb MB] [--batch-maps N]

MLflow's scoring server (`POST /invocations`, `GET /ping`, the same request formats as
`mlflow models serve`) with a guard in front of it: a body over --max-body-mb is refused with
HTTP 413 before it is read, JSON nested over 64 levels with 400, both before parsing, so
one oversized request never stalls the others. Concurrent requests share forward passes, at
most --batch-maps maps each (default: the model's own, 64; 1 answers requests one at a time).
SIGTERM or Ctrl-C finishes the requests in flight and removes the model's scratch folder.
Loopback only unless --host says otherwise: the server has no authentication.
"""

from __future__ import annotations

import argparse
import sys

from radiodiff.cli.arguments import positive_int, tcp_port

DEFAULT_MODEL = "models:/radiodiff-flux@champion"


def _megabytes(text: str) -> float:
    value = float(text)
    if not 0.001 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be in 0.001..4096 MB, got {text}")
    return value


def add_parser(subparsers) -> None:
    """Register the `serve` subcommand."""
    from radiodiff.tracking.server import DEFAULT_MAX_BODY_MB

    parser = subparsers.add_parser("serve", help="serve the registered model over HTTP (MLflow scoring protocol)",
                                   description="\n\n".join(__doc__.split("\n\n")[2:]),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="URI",
                        help=f"MLflow model URI (default: {DEFAULT_MODEL}, the version evaluate promoted)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=tcp_port, default=5001, help="TCP port (default: 5001)")
    parser.add_argument("--max-body-mb", type=_megabytes, default=DEFAULT_MAX_BODY_MB, metavar="MB",
                        help=f"largest request body accepted (default: {DEFAULT_MAX_BODY_MB:g})")
    parser.add_argument("--batch-maps", type=positive_int, metavar="N",
                        help="most maps in one shared forward pass (default: the model's)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C; a model URI that cannot be loaded is a UserError (exit 2)."""
    from radiodiff.tracking.server import load_served_model, serve_model

    model = load_served_model(args.model, batch_maps=args.batch_maps)
    print(f"serving {args.model} on http://{args.host}:{args.port} (POST /invocations; Ctrl-C stops)",
          file=sys.stderr)
    code = serve_model(model, host=args.host, port=args.port, max_body_bytes=int(args.max_body_mb * 1e6))
    print(f"stopped serving {args.model}", file=sys.stderr)
    return code
