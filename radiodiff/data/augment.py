"""Dihedral augmentation: the 8 rotations and mirrorings of a square map.

Path loss has no preferred compass direction, so turning a city, its Tx, its cars and its
radio map alike gives another valid sample. The project's simulator agrees up to its grid's
tie-breaks between near-equal paths (tests/test_augment.py simulates a turned real layout), and
RadioMapSeer's maps are physical. With 64 train layouts the supervised baseline memorised the
layouts without it (README, "Choices the measurements made").

Variant v in [0, 8): `v % 4` quarter turns counter-clockwise (as `torch.rot90` over the last two
axes), then a left-right mirror when v >= 4. Variant 0 is the map as prepared.
"""

from __future__ import annotations

import torch

from radiodiff.options import Augmentation

DIHEDRAL_VARIANTS = 8


def dihedral(image: torch.Tensor, variant: int) -> torch.Tensor:
    """`image` `[..., N, N]` turned as `variant` says (a new contiguous tensor)."""
    turned = torch.rot90(image, variant % 4, dims=(-2, -1))
    if variant >= 4:
        turned = torch.flip(turned, dims=(-1,))
    return turned.contiguous()


def dihedral_pixel(row: int, col: int, size: int, variant: int) -> tuple[int, int]:
    """Where pixel (row, col) of an `size` x `size` map lands under `variant`."""
    for _ in range(variant % 4):
        row, col = size - 1 - col, row  # one counter-clockwise quarter turn
    if variant >= 4:
        col = size - 1 - col
    return row, col


class DihedralDataset(torch.utils.data.Dataset):
    """All 8 variants of every sample of `base`: item i is variant `i // len(base)` of sample
    `i % len(base)`, so the first `len(base)` items are `base` itself and a seeded batch order
    over the whole range stays resumable.

    The image entries of an item (`gain` `[1, N, N]`, `cond` `[C, N, N]`) are turned and `tx`
    moves with them; ids and flags are kept. Maps must be square.
    """

    IMAGES = ("gain", "cond")

    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return DIHEDRAL_VARIANTS * len(self.base)

    def __getitem__(self, item: int) -> dict:
        if not 0 <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} samples")
        variant, index = divmod(item, len(self.base))
        sample = dict(self.base[index])
        if variant == 0:
            return sample
        size = sample["gain"].shape[-1]
        if sample["gain"].shape[-2] != size:
            raise ValueError(f"dihedral augmentation needs square maps, got {tuple(sample['gain'].shape[-2:])}")
        for name in self.IMAGES:
            sample[name] = dihedral(sample[name], variant)
        if "tx" in sample:
            row, col = (int(v) for v in sample["tx"])
            sample["tx"] = torch.tensor(dihedral_pixel(row, col, size, variant))
        return sample


def augmented(dataset: torch.utils.data.Dataset, augment: Augmentation) -> torch.utils.data.Dataset:
    """The train set a stage feeds its loader under `augment`."""
    return DihedralDataset(dataset) if augment is Augmentation.DIHEDRAL else dataset
