"""The served model under load: `radiodiff serve` with and without dynamic batching, side by side.

    .venv/bin/python benchmarks/serve.py [--models models] [--bank bank] [--params params.yaml]
                                         [--clients 8] [--requests 200] [--batch-maps 1 64]

Saves the trained model files (`make demo` first) as the model `evaluate` registers, into a
temporary folder (no tracking store is touched), then, for each --batch-maps value, starts
`radiodiff serve` on a free loopback port and lets --clients threads each send --requests
one-map requests back to back (`dataframe_records`, 0/1 integers: the README's form), over
RadioMapSeer layouts of the bank with their own Tx sites. Each client's first request per
layout is sent before the clock starts, so every timed request is a bank hit. Prints one row
per setting: errors, p50/p90/p99/max latency and requests/s; then, on the last server, what an
oversized body (305 maps as JSON floats, ~100 MB) costs: the time to its 413, and the /ping
and normal-request latencies meanwhile.
The load generator runs on the same machine: on 2 cores it takes CPU from the server.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = 8  # distinct layouts the clients cycle over


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, body: bytes, timeout: float = 300.0) -> tuple[int, float]:
    """(HTTP status, seconds) of one POST; a refused connection is status 0."""
    start = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        error.read()
        status = error.code
    except OSError:
        status = 0
    return status, time.perf_counter() - start


def _get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
    return time.perf_counter() - start


def request_bodies(bank_dir: Path) -> list[bytes]:
    """One-map request bodies over `LAYOUTS` RadioMapSeer layouts stored in the bank, each with
    one of its own Tx sites, as JSON bytes (encoded once, outside the timed loop)."""
    import pyarrow.parquet as pq

    from radiodiff.data.geometry import load_geometry

    ids = sorted({int(s) for part in sorted(bank_dir.glob("part-*.parquet"))
                  for s in pq.read_table(part, columns=["scene_id"])["scene_id"].to_pylist() if s >= 0})
    if not ids:
        raise SystemExit(f"{bank_dir} holds no RadioMapSeer scene: run `make demo` (build_bank) first")
    geometry = load_geometry()
    chosen = ids[:: max(1, len(ids) // LAYOUTS)][:LAYOUTS]
    bodies = []
    for scene in chosen:
        row, col = (int(v) for v in geometry.tx_sites[scene][0])
        record = {"buildings": geometry.buildings[scene].astype(np.uint8).tolist(), "tx": [row, col]}
        bodies.append(json.dumps({"dataframe_records": [record]}).encode())
    return bodies


def start_server(model: Path, batch_maps: int, scratch: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = scratch / f"serve-{batch_maps}.log"
    env = dict(os.environ, TMPDIR=str(scratch))
    with log.open("w") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "radiodiff"), "serve", "--model", str(model),
                                    "--port", str(port), "--batch-maps", str(batch_maps)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"radiodiff serve exited:\n{log.read_text()[-3000:]}")
        try:
            _get(url + "/ping")
            return process, url
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"radiodiff serve did not answer /ping in 180 s:\n{log.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def load_run(url: str, bodies: list[bytes], clients: int, requests: int) -> dict:
    """`clients` threads x `requests` requests each; latency percentiles (ms), errors, req/s."""
    for body in bodies:  # the first request per layout misses the bank: not timed
        _post(url + "/invocations", body)

    def client(index: int) -> list[tuple[int, float]]:
        return [_post(url + "/invocations", bodies[(index + k) % len(bodies)]) for k in range(requests)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rows in pool.map(client, range(clients)) for r in rows]
    wall = time.perf_counter() - start
    ms = np.array([seconds for _, seconds in results]) * 1e3
    return {"requests": len(results), "errors": sum(status != 200 for status, _ in results),
            "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "req_per_s": len(results) / wall}


def oversized_run(url: str, body: bytes) -> dict:
    """An oversized body (305 maps as JSON floats) against the server, with /ping and a normal
    request timed while it is in flight."""
    big = json.loads(body)["dataframe_records"][0]
    big["buildings"] = np.asarray(big["buildings"], dtype=float).tolist()
    oversized = json.dumps({"dataframe_records": [big] * 305}).encode()
    pings: list[float] = []
    done = threading.Event()

    def ping_loop() -> None:
        while not done.is_set():
            pings.append(_get(url + "/ping"))
            time.sleep(0.05)

    pinger = threading.Thread(target=ping_loop)
    pinger.start()
    status, seconds = _post(url + "/invocations", oversized)
    normal_status, normal_seconds = _post(url + "/invocations", body)
    done.set()
    pinger.join()
    return {"body_mb": len(oversized) / 1e6, "status": status, "refused_in_ms": seconds * 1e3,
            "ping_max_ms": max(pings) * 1e3 if pings else float("nan"), "normal_status": normal_status,
            "normal_ms": normal_seconds * 1e3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--bank", type=Path, default=ROOT / "bank")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--batch-maps", type=int, nargs="+", default=[1, 64],
                        help="settings compared (1 = one request per forward pass)")
    args = parser.parse_args(argv)

    from radiodiff.artifacts.layout import ModelFiles
    from radiodiff.config import load_params
    from radiodiff.tracking.registry import save_flux_model

    params = load_params(args.params)
    files = ModelFiles(args.models).served()
    bodies = request_bodies(args.bank)
    rows = []
    with tempfile.TemporaryDirectory(prefix="radiodiff-serve-bench-") as scratch:
        model = save_flux_model(Path(scratch) / "model", ldm_path=files.ldm, vae_path=files.vae, flux=params.flux,
                                resolution=params.prepare.resolution, tail_path=files.flux_tail, bank_dir=args.bank)
        oversized = None
        for index, batch_maps in enumerate(args.batch_maps):
            process, url = start_server(model, batch_maps, Path(scratch))
            try:
                rows.append({"batch_maps": batch_maps, **load_run(url, bodies, args.clients, args.requests)})
                if index == len(args.batch_maps) - 1:
                    oversized = oversized_run(url, bodies[0])
            finally:
                stop_server(process)
    print(f"benchmarks/serve.py: radiodiff serve, {args.clients} clients x {args.requests} one-map requests, "
          f"{len(bodies)} banked layouts, {os.cpu_count()} cores shared with the clients, "
          f"resolution {params.prepare.resolution}")
    header = ("batch_maps", "requests", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms", "req_per_s")
    print(" ".join(f"{h:>10}" for h in header))
    for row in rows:
        print(" ".join(f"{row[h]:>10.1f}" if isinstance(row[h], float) else f"{row[h]:>10}" for h in header))
    if oversized is not None:
        print(f"oversized body {oversized['body_mb']:.0f} MB: HTTP {oversized['status']} in "
              f"{oversized['refused_in_ms']:.0f} ms; /ping at most {oversized['ping_max_ms']:.0f} ms meanwhile; "
              f"a normal request after it: HTTP {oversized['normal_status']} in {oversized['normal_ms']:.0f} ms")
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
