"""Randomness for training: seeds derived from (seed, stream, step), and RNG state capture.

Exact resume needs every random draw of step `n` to depend only on the run seed and `n`,
never on how many draws happened before a restart. So each consumer (batch order, a
training micro-batch, a validation pass) gets its own seed from `derive_seed`, and the
process-wide generators are saved in checkpoints only as a fallback for user code that
draws from them outside the loop.
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

# Stream ids keep the seeds of different consumers apart for the same (seed, step).
STREAM_BATCH_ORDER = 0
STREAM_TRAIN_STEP = 1
STREAM_VALIDATION = 2
STREAM_LOADER = 3
STREAM_INIT = 4


def derive_seed(*keys: int) -> int:
    """Mix non-negative integer keys into one 64-bit seed (NumPy's SeedSequence hashing).

    Neighbouring keys such as (seed, step) and (seed, step + 1) give unrelated seeds, unlike
    `seed + step`, which would make run A at step 1 equal run B (seed + 1) at step 0.
    """
    if any(int(k) < 0 for k in keys):
        raise ValueError(f"seed keys must be non-negative, got {keys}")
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` on `device`, seeded with `seed`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators for the body, then restore their previous state.

    Modules such as `nn.Dropout` cannot take a generator; seeding the global one per
    micro-batch makes them reproducible on resume without leaking state to the caller.
    """
    devices = [] if device.type == "cpu" else [_device_index(device)]
    device_type = "cuda" if device.type == "cpu" else device.type
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        torch.manual_seed(seed)
        yield


def seeded_init(seed: int) -> contextlib.AbstractContextManager[None]:
    """Seed the initial weights of modules built in the body from the run `seed`.

    `nn.Module` constructors draw from torch's global generator, which a fresh process seeds
    at random: without this, two runs of the same params start from different weights.
    """
    return seeded_global_rng(derive_seed(seed, STREAM_INIT), torch.device("cpu"))


def _device_index(device: torch.device) -> int:
    if device.index is not None:
        return device.index
    return torch.get_device_module(device.type).current_device()


def capture_rng_state() -> dict:
    """The process-wide RNG states as tensors and plain values (safe for weights_only load).

    Returns {"torch": uint8 tensor, "numpy": {...}, "python": {...}, "cuda": [tensors]}.
    """
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(mt_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Set the process-wide RNG states from a `capture_rng_state` result."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
