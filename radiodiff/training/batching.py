"""A seeded, infinite, resumable order of index batches, and a DataLoader built on it.

The order is a pure function of (dataset length, batch size, seed): epoch `e` shuffles
with a generator seeded from (seed, e), and global batch `i` sits at
(epoch, batch_in_epoch) = divmod(i, batches_per_epoch). Resuming at batch `i` therefore
needs nothing but `i`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from radiodiff.errors import UserError
from radiodiff.training.rng import STREAM_BATCH_ORDER, STREAM_LOADER, derive_seed, seeded_generator


class BatchOrder:
    """Index batches for a dataset of `num_samples` items, reshuffled every epoch.

    With `drop_last` (the default) every batch holds exactly `batch_size` indices and the
    remainder of each epoch is skipped; otherwise the last batch of an epoch is shorter.
    """

    def __init__(self, *, num_samples: int, batch_size: int, seed: int, drop_last: bool = True) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if num_samples < (batch_size if drop_last else 1):
            raise UserError(f"dataset has {num_samples} samples, fewer than one batch of {batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one pass over the data."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def position(self, index: int) -> tuple[int, int]:
        """(epoch, batch_in_epoch) of global batch `index` (0-based)."""
        return divmod(index, self.batches_per_epoch)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The shuffled sample indices of `epoch`, `[num_samples]` int64."""
        generator = seeded_generator(derive_seed(self.seed, STREAM_BATCH_ORDER, epoch))
        return torch.randperm(self.num_samples, generator=generator)

    def batch(self, index: int) -> list[int]:
        """The sample indices of global batch `index`."""
        epoch, within = self.position(index)
        return self._slice(self.permutation(epoch), within)

    def iter_from(self, index: int = 0) -> Iterator[list[int]]:
        """Yield batches `index, index + 1, ...` forever (one permutation per epoch)."""
        if index < 0:
            raise ValueError(f"batch index must be non-negative, got {index}")
        epoch, within = self.position(index)
        while True:
            perm = self.permutation(epoch)
            for b in range(within, self.batches_per_epoch):
                yield self._slice(perm, b)
            epoch, within = epoch + 1, 0

    def _slice(self, perm: torch.Tensor, within: int) -> list[int]:
        start = within * self.batch_size
        return perm[start : start + self.batch_size].tolist()


class ResumableBatchSampler(Sampler[list[int]]):
    """`BatchOrder` as an infinite batch sampler starting at global batch `start`.

    Use as `DataLoader(dataset, batch_sampler=ResumableBatchSampler(order, start=i))`; it
    has no length, so the consumer decides how many batches to take.
    """

    def __init__(self, order: BatchOrder, *, start: int = 0) -> None:
        self.order = order
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        return self.order.iter_from(self.start)


def loader_factory(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = True,
    device: torch.device | None = None,
    **loader_kwargs: Any,
) -> Callable[[int], DataLoader]:
    """A `batches` callable for `train_loop`: `factory(start)` is a DataLoader from batch `start`.

    The DataLoader gets its own generator seeded from (seed, start), so creating it does
    not draw from torch's global generator and worker seeds do not depend on history.
    For a CUDA `device` the batches come in pinned memory (so the loop's copies to the GPU are
    asynchronous) and worker processes stay up between loaders. Extra keyword arguments
    (collate_fn, ...) go to `DataLoader`.
    """
    cuda = device is not None and device.type == "cuda"
    loader_kwargs.setdefault("pin_memory", cuda)
    if num_workers > 0:
        loader_kwargs.setdefault("persistent_workers", cuda)
    order = BatchOrder(num_samples=len(dataset), batch_size=batch_size, seed=seed, drop_last=drop_last)

    def factory(start: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=ResumableBatchSampler(order, start=start),
            num_workers=num_workers,
            generator=seeded_generator(derive_seed(seed, STREAM_LOADER, start)),
            **loader_kwargs,
        )

    return factory
