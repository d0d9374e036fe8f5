"""Run a command (`dvc repro`) against one Prefect server started for it.

    python -m pipelines.prefect_server -- dvc repro

Without `PREFECT_API_URL`, every Prefect process starts a temporary server of its own: each
stage of `dvc repro`, and each Dask worker of `prepare` and `build_bank` besides, which on 2
cores costs a few seconds per stage and a busy uvicorn per worker. This starts one server on a
free loopback port (its database in `PREFECT_HOME`, so the runs stay browsable with `make ui`),
runs the command with `PREFECT_API_URL` pointing at it, and stops the server when the command
ends, however it ends. With `PREFECT_API_URL` already set (your own server), the command runs
against that one and nothing is started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(log_path: Path) -> tuple[subprocess.Popen, str]:
    """A Prefect server on a free loopback port, in its own process group; (process, API URL)."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    prefect = Path(sys.executable).with_name("prefect")
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="false")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(api_url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(process)
            raise RuntimeError(f"the Prefect server did not start (log: {log_path}):\n"
                               + log_path.read_text(errors="replace")[-2000:])
        time.sleep(0.5)
    return process, api_url


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (uvicorn workers included), hard after 20 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass


def run_with_server(command: list[str]) -> int:
    """Run `command` with one Prefect server for all its processes; returns its exit code."""
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(command)
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    process, api_url = start_server(home / "demo-server.log")
    print(f"prefect: one server for this run at {api_url.removesuffix('/api')} (runs stay in {home})",
          file=sys.stderr, flush=True)
    try:
        return subprocess.call(command, env=dict(os.environ, PREFECT_API_URL=api_url))
    except KeyboardInterrupt:
        return 130
    finally:
        stop_server(process)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m pipelines.prefect_server -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return run_with_server(argv)


if __name__ == "__main__":
    raise SystemExit(main())
