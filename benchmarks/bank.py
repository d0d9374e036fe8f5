"""Midpoint-bank scaling: opening, lookups and full scans of banks of 1k to 100k entries.

    .venv/bin/python benchmarks/bank.py [--sizes 1000 10000 100000] [--latent 3 8 8] [--repeats 3]

For each size, writes a temporary bank of random float32 latents (scenes 0..N-1, in parts of
25k entries, through the bank's own encoder and part writer) and prints one row:
- open: a new `MidpointBank` object's first `get` (it builds the index from the small
  columns, then reads one row group), and the MB it read (Linux /proc/self/io);
- get / nearest: median warm lookups of a random scene / a random embedding;
- scan: reading every entry, as `verify_bank` (checksums) and as raw pyarrow `read_table`.
Times are wall clock with the OS page cache warm, medians over --repeats; "(cpu)" columns give
the process CPU time of the same work, the fairer number when other jobs share the machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from radiodiff.bank import EMBEDDING_DIM, BankKey, Midpoint, MidpointBank, verify_bank
from radiodiff.bank.parts import list_parts, write_part
from radiodiff.bank.schema import encode_table

KEY = BankKey(model_hash="benchmark-model", sampler_hash="benchmark-sampler", t_mid=600)
PART_ROWS = 25_000
LOOKUPS = 100


def fill(root: Path, size: int, latent: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Write `size` random latents `latent` in parts of PART_ROWS; returns the embeddings `[N, D]`
    (occupancy fractions k / 16, as 8 m cells of a 32 x 32 layout give)."""
    embeddings = (rng.integers(0, 17, (size, EMBEDDING_DIM)) / 16).astype(np.float32)
    for start in range(0, size, PART_ROWS):
        rows = min(PART_ROWS, size - start)
        latents = rng.standard_normal((rows, *latent), dtype=np.float32)
        midpoints = [Midpoint(start + i, latents[i], embeddings[start + i]) for i in range(rows)]
        write_part(root, encode_table(midpoints, model_hash=KEY.model_hash, sampler_hash=KEY.sampler_hash,
                                      t_mid=KEY.t_mid, created=datetime.now(UTC)))
    return embeddings


def bytes_read() -> int | None:
    """Bytes this process has read so far (Linux /proc/self/io `rchar`), or None elsewhere."""
    try:
        with open("/proc/self/io") as io:
            return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))
    except OSError:
        return None


def seconds(work: Callable[[], object]) -> float:
    return timed(work)[0]


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall, process CPU) seconds of `work()`; CPU time is what other jobs on the machine do not stretch."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def open_cost(root: Path, scene: int) -> tuple[float, float, float | None]:
    """(wall s, CPU s, MB read) of a new bank object's first get of `scene`."""
    before = bytes_read()
    wall, cpu = timed(lambda: MidpointBank(root, KEY).get(scene))
    after = bytes_read()
    return wall, cpu, None if before is None or after is None else (after - before) / 1e6


def measure(size: int, latent: tuple[int, ...], repeats: int, rng: np.random.Generator) -> dict[str, float]:
    """One row of the table for a bank of `size` entries."""
    with tempfile.TemporaryDirectory(prefix="bank-bench-") as tmp:
        root = Path(tmp)
        write_s = seconds(lambda: fill(root, size, latent, rng))
        opens = [open_cost(root, int(rng.integers(size))) for _ in range(repeats)]
        bank = MidpointBank(root, KEY)
        bank.get(0)
        gets = [seconds(lambda s=int(s): bank.get(s)) for s in rng.integers(size, size=LOOKUPS)]
        queries = (rng.integers(0, 17, (LOOKUPS, EMBEDDING_DIM)) / 16).astype(np.float32)
        nearest = [seconds(lambda q=q: bank.nearest(q, float("inf"))) for q in queries]
        verify = [timed(lambda: verify_bank(root)) for _ in range(repeats)]
        raw = [seconds(lambda: [pq.read_table(root / name) for name in list_parts(root)]) for _ in range(repeats)]
        megabytes = sum(path.stat().st_size for path in root.iterdir()) / 1e6
    read_mb = [mb for _, _, mb in opens if mb is not None]
    return {"entries": size, "MB": megabytes, "write_s": write_s,
            "open_ms": 1e3 * statistics.median(wall for wall, _, _ in opens),
            "open_cpu_ms": 1e3 * statistics.median(cpu for _, cpu, _ in opens),
            "open_MB": statistics.median(read_mb) if read_mb else float("nan"),
            "get_ms": 1e3 * statistics.median(gets), "nearest_ms": 1e3 * statistics.median(nearest),
            "verify_s": statistics.median(wall for wall, _ in verify),
            "verify_cpu_s": statistics.median(cpu for _, cpu in verify), "arrow_s": statistics.median(raw)}


COLUMNS = [("entries", "entries", "{:8d}"), ("MB", "MB on disk", "{:10.1f}"), ("write_s", "write s", "{:8.2f}"),
           ("open_ms", "open+get ms", "{:11.1f}"), ("open_cpu_ms", "(cpu)", "{:6.0f}"),
           ("open_MB", "MB read", "{:8.2f}"), ("get_ms", "get ms", "{:7.2f}"), ("nearest_ms", "nearest ms", "{:10.2f}"),
           ("verify_s", "scan (verify) s", "{:15.2f}"), ("verify_cpu_s", "(cpu)", "{:6.2f}"),
           ("arrow_s", "scan (arrow) s", "{:14.2f}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000], help="bank entries")
    parser.add_argument("--latent", type=int, nargs="+", default=[3, 8, 8], help="latent shape (default 3 8 8)")
    parser.add_argument("--repeats", type=int, default=3, help="opens and scans per size (default 3)")
    args = parser.parse_args()
    if min(args.sizes + args.latent + [args.repeats]) < 1:
        parser.error("--sizes, --latent and --repeats must be >= 1")
    print(f"latents {args.latent} float32, embeddings {EMBEDDING_DIM} float32, parts of {PART_ROWS} entries; "
          f"open = new bank object + first get; get/nearest: median of {LOOKUPS} warm lookups")
    header = " ".join(f"{title:>{len(fmt.format(0))}s}" for _, title, fmt in COLUMNS)
    print(header, "-" * len(header), sep="\n")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        row = measure(size, tuple(args.latent), args.repeats, rng)
        print(" ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS), flush=True)


if __name__ == "__main__":
    main()
