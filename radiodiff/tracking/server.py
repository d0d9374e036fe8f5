"""`radiodiff serve`: MLflow's scoring server for the registered model, behind a request guard.

MLflow's server reads a whole body and parses it before any model code runs: a 60 MB body
held every client for ~30 s, and JSON nested a few thousand levels deep ended as HTTP 500
(a RecursionError in the parser). `RequestGuard`, an ASGI layer in front of it, refuses both
before parsing: a body over `max_body_bytes` with 413 (unread when the client waits for
`Expect: 100-continue`, else read and dropped as it streams in, never kept or parsed), JSON
nested deeper than `MAX_JSON_DEPTH` with 400. Everything else passes to MLflow's own app
unchanged (`/invocations`, `/ping`, `/health`, `/version`).

`serve_model` loads the model once, serves on one process (the model batches concurrent
requests itself, see `registry.FluxPyfunc`) and, on SIGTERM or Ctrl-C, finishes the
requests in flight and removes the model's scratch folder before it exits.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_MB = 16.0  # 16 maps (the request limit) of buildings + cars as JSON floats: ~10 MB
MAX_JSON_DEPTH = 64  # a request is at most ~6 levels deep (dataframe_split / batch of 2-D arrays)
GUARDED_PATHS = ("/invocations",)
DRAIN_FACTOR = 16  # an oversized body is read and dropped up to 16x the limit, so the client sees the 413


def json_depth(body: bytes) -> int:
    """The deepest nesting of `[`/`{` in a JSON body (brackets inside strings count too: a
    request of numbers has none there, so at worst a bracket-laden string is refused)."""
    if not body:
        return 0
    data = np.frombuffer(body, dtype=np.uint8)
    step = (data == ord("[")).astype(np.int32) + (data == ord("{"))
    step -= (data == ord("]")).astype(np.int32) + (data == ord("}"))
    return int(np.cumsum(step).max(initial=0))


class RequestGuard:
    """ASGI middleware: bodies of POSTs to `GUARDED_PATHS` are capped at `max_body_bytes`
    (413) and, for JSON, at `max_depth` levels of nesting (400), before `app` sees them."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        if max_body_bytes < 1 or max_depth < 1:
            raise ValueError(f"limits must be positive, got {max_body_bytes} bytes and depth {max_depth}")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in GUARDED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes and \
                headers.get("expect", "").lower() == "100-continue":
            # The client (curl, for large bodies) waits for a go-ahead before sending: refuse unread.
            await _refuse(send, 413, "REQUEST_TOO_LARGE", self._too_large(int(declared)))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size <= self.max_body_bytes:
                chunks.append(message.get("body", b""))
            elif size > self.max_body_bytes * DRAIN_FACTOR:
                break  # past what is worth draining: answer now, and the connection closes
            if not message.get("more_body", False):
                break
        if size > self.max_body_bytes:
            # Drained, never kept or parsed: a client that sends its whole body first can read the answer.
            await _refuse(send, 413, "REQUEST_TOO_LARGE", self._too_large(size))
            return
        body = b"".join(chunks)
        if "json" in headers.get("content-type", "") and (depth := json_depth(body)) > self.max_depth:
            await _refuse(send, 400, "INVALID_PARAMETER_VALUE",
                          f"bad request: JSON nested {depth} levels deep; at most {self.max_depth}")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the client's disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: int) -> str:
        return (f"bad request: the body is {size:,} bytes or more; at most {self.max_body_bytes:,} "
                f"(`radiodiff serve --max-body-mb`); send fewer maps per request")


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    """An MLflow-style JSON error answer, sent without reading the rest of the body."""
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def guarded_app(model: Any, *, max_body_bytes: int) -> ASGIApp:
    """MLflow's scoring app for a loaded pyfunc `model`, behind a `RequestGuard`."""
    from mlflow.pyfunc import scoring_server

    return RequestGuard(scoring_server.init(model), max_body_bytes=max_body_bytes)


def load_served_model(model_uri: str, *, batch_maps: int | None = None) -> Any:
    """The pyfunc at `model_uri` (`models:/radiodiff-flux@champion`, a run or a folder), its
    batch size overridden when `batch_maps` is given. A URI MLflow cannot resolve is a UserError."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from radiodiff.errors import UserError
    from radiodiff.tracking import configure

    configure()
    overrides = None if batch_maps is None else {"batch_maps": int(batch_maps)}
    try:
        return mlflow.pyfunc.load_model(model_uri, model_config=overrides)
    except (MlflowException, OSError) as exc:
        hint = ""
        if "@" in model_uri and "alias" in str(exc).lower():
            hint = ("; evaluate sets an alias only on a version that passes its gate (see the versions' "
                    "champion_decision tag): serve one by number or --model models:/radiodiff-flux/latest")
        raise UserError(f"cannot load model {model_uri}: {str(exc).splitlines()[0][:200]}{hint}") from None


def serve_model(model: Any, *, host: str, port: int, max_body_bytes: int) -> int:
    """Serve a loaded pyfunc `model` (`load_served_model`) on `host:port` until SIGTERM or
    Ctrl-C; returns the exit code. The model's scratch folder is removed on the way out,
    whichever signal ended the server."""
    import uvicorn

    app = guarded_app(model, max_body_bytes=max_body_bytes)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, workers=1, log_level="info",
                                           timeout_graceful_shutdown=30))
    exit_code = 0

    def stop(signum: int, _frame: Any) -> None:
        # uvicorn restores this handler after its graceful shutdown and raises the signal
        # again: ending through SystemExit (not the default handler) lets `finally` run.
        nonlocal exit_code
        exit_code = 128 + signum
        raise SystemExit(exit_code)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _close(model)
    return exit_code


def _close(model: Any) -> None:
    """Free what the served model holds on disk (its scratch folder), if it can say so."""
    inner = model.unwrap_python_model() if hasattr(model, "unwrap_python_model") else None
    if inner is not None and hasattr(inner, "close"):
        inner.close()
