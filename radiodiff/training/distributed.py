"""Data-parallel training over several processes: the one module that knows torch.distributed.

A run over `W` devices is `W` processes started by torchrun (`torch.distributed.run`), one
per device. Every process reads the same global micro-batch `i` of the seeded batch order
and keeps its own contiguous slice of it, so the effective batch and the batch order stay
functions of the step alone, as in a single process. DistributedDataParallel averages the
gradients, each rank's loss weighted by its share of the batch, so every rank applies the
same update and all ranks keep identical weights. Only rank 0 writes checkpoints, logs and
output files.

Outside torchrun (world size 1) every helper here is a no-op, so single-process code pays
nothing and draws exactly the random numbers it always drew.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ContextManager, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from radiodiff.errors import UserError

# torchrun exports these to each process it starts; their absence means "not launched".
_LAUNCH_VARIABLES = ("LOCAL_RANK", "WORLD_SIZE")
# Long enough for rank 0 to validate or write a large checkpoint while the others wait.
_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True, kw_only=True)
class Ranks:
    """Where this process sits in the run: `rank` of `world_size`, `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that owns every side effect."""
        return self.rank == 0

    @property
    def seed_keys(self) -> tuple[int, ...]:
        """Extra keys for per-step seeds: none alone (seeds as ever), the rank when shared, so
        that ranks draw independent noise for their different samples."""
        return () if self.world_size == 1 else (self.rank,)


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """True inside a process started by torchrun."""
    environ = os.environ if environ is None else environ
    return any(name in environ for name in _LAUNCH_VARIABLES)


def torchrun_command(module: str, args: Sequence[str], *, devices: int, python: str | None = None) -> list[str]:
    """The argument list that runs `python -m module *args` as `devices` local processes."""
    if devices < 1:
        raise ValueError(f"devices must be at least 1, got {devices}")
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={devices}", "-m", module, *args]


def launch(module: str, args: Sequence[str], *, devices: int) -> int:
    """Run `module` under torchrun on `devices` local processes; return its exit code.

    Each process gets an equal share of the cores (OMP_NUM_THREADS, unless the user set
    it), rather than torchrun's silent default of one thread.
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // devices, 1)))
    return subprocess.run(torchrun_command(module, args, devices=devices), env=env, check=False).returncode


def current() -> Ranks:
    """This process's place in the initialised process group (a lone process: rank 0 of 1)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def is_main() -> bool:
    """True on rank 0 and in a process that is not part of a group."""
    return current().is_main


@contextlib.contextmanager
def process_group() -> Iterator[Ranks]:
    """Join the torchrun process group for the body, then leave it; a no-op outside torchrun.

    CPU tensors go through gloo; on a CUDA machine, CUDA tensors go through NCCL and each
    process's default GPU is its `LOCAL_RANK`.
    """
    if not launched() or dist.is_initialized():
        yield current()
        return
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op alone)."""
    if current().world_size > 1:
        dist.barrier()


def wrap_model(model: nn.Module) -> nn.Module:
    """`model` in DistributedDataParallel when the group has several ranks, else `model` itself.

    The wrapper shares the parameters of `model`; pass the wrapper to the forward passes
    (that is where gradients get synchronised) and keep `model` for optimizer, EMA and state
    dicts. Wrapping broadcasts rank 0's weights, so all ranks start equal. Every parameter
    must take part in each forward pass (DDP's default, true of every model here).
    """
    ranks = current()
    if ranks.world_size == 1:
        return model
    device = next(model.parameters()).device
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def gradient_sync(model: nn.Module, *, enabled: bool) -> ContextManager:
    """Context for one micro-batch's forward and backward: with `enabled` False, a DDP model
    only accumulates its gradients locally (saves an all-reduce per accumulated micro-batch)."""
    if isinstance(model, DistributedDataParallel) and not enabled:
        return model.no_sync()
    return contextlib.nullcontext()


def shard_bounds(total: int, ranks: Ranks) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous slice of `total` items; the slices of all ranks
    are disjoint, cover 0..total, and differ in size by at most one."""
    return total * ranks.rank // ranks.world_size, total * (ranks.rank + 1) // ranks.world_size


def shard_batch(batch: Any, ranks: Ranks) -> tuple[Any, float]:
    """This rank's slice of a global batch and its share of the samples, in (0, 1].

    Every tensor with a leading batch dimension (also inside dicts, lists, tuples) is sliced
    along dim 0; 0-d tensors and non-tensor values pass unchanged. Alone: `(batch, 1.0)`.
    """
    if ranks.world_size == 1:
        return batch, 1.0
    total = _batch_size(batch)
    if total < ranks.world_size:
        raise UserError(f"a batch of {total} samples cannot be split over {ranks.world_size} devices: "
                        "raise the batch size or lower `devices`")
    start, stop = shard_bounds(total, ranks)
    return _slice(batch, start, stop), (stop - start) / total


def sum_over_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Sum each value over all ranks (every rank must pass the same keys); alone: a copy."""
    if current().world_size == 1:
        return dict(values)
    keys = sorted(values)
    # float64: the per-rank shares of a mean add up without visible rounding.
    packed = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return dict(zip(keys, packed.tolist()))


def from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (any picklable object); alone: `value`."""
    if current().world_size == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _batch_size(batch: Any) -> int:
    sizes = set()
    _collect_sizes(batch, sizes)
    if len(sizes) != 1:
        raise ValueError(f"cannot shard a batch whose tensors have leading sizes {sorted(sizes)}")
    return sizes.pop()


def _collect_sizes(batch: Any, sizes: set[int]) -> None:
    if isinstance(batch, torch.Tensor):
        if batch.dim() > 0:
            sizes.add(batch.shape[0])
    elif isinstance(batch, Mapping):
        for value in batch.values():
            _collect_sizes(value, sizes)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            _collect_sizes(value, sizes)


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop] if batch.dim() > 0 else batch
    if isinstance(batch, dict):
        return {key: _slice(value, start, stop) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_slice(value, start, stop) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_slice(value, start, stop) for value in batch)
    return batch
