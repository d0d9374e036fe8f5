"""The train split's VAE latents, encoded once per autoencoder, dataset and augmentation.

train_ldm, train_ldm_alt (one run per objective), tune_tail and tune_few_step (one run per
objective) all train on the posterior-mode latents of the same maps under the same VAE, and each
used to encode them itself: in the default profile 14 s for the dihedral train set and 4 s for
the plain one, six times over on a 2-core CPU. The first run now writes them under the runs
folder; the later ones read them. The file is keyed by the autoencoder's weights and latent
scale, every file of the dataset, the split, the augmentation and the device type (a GPU's
convolutions round differently from a CPU's), so a cached tensor is the one a fresh encoding
would give, bit for bit, and a change of any input writes a new file. The plain train set is
the first rows of its dihedral augmentation (`DihedralDataset`), so it is read from there when
only that one is cached.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from radiodiff.data.augment import DIHEDRAL_VARIANTS, augmented
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.generation import LatentDiffusion
from radiodiff.io import atomic_path, safe_child
from radiodiff.options import Augmentation
from radiodiff.stages.common import batched, dataset_digest

ENCODE_BATCH = 64
CACHE_FOLDER = "latents"  # under the runs folder
SPLIT = "train"


class LatentDataset(torch.utils.data.Dataset):
    """A dataset of maps (`RadioMapDataset`, or its augmentation) whose items also carry the
    sample's scaled VAE latent `[3, h, w]`."""

    def __init__(self, base: torch.utils.data.Dataset, latents: torch.Tensor) -> None:
        if len(latents) != len(base):
            raise ValueError(f"{len(latents)} latents for {len(base)} samples")
        self.base, self.latents = base, latents

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int) -> dict:
        return {**self.base[item], "latent": self.latents[item]}


def encode_dataset(model: LatentDiffusion, dataset: torch.utils.data.Dataset) -> torch.Tensor:
    """Scaled posterior-mode latents of every sample, `[N, 3, h, w]` float32 on the CPU, in the
    dataset's order (encoded in batches on the model's device)."""
    with torch.no_grad():
        return torch.cat([model.encode(batch["gain"]).cpu()
                          for batch in batched(dataset, ENCODE_BATCH, device=model.device)])


def autoencoder_digest(model: LatentDiffusion) -> str:
    """sha256 of the VAE's weights (names, dtypes, shapes and bytes) and the latent scale: two
    models with equal digests encode every map alike."""
    sha = hashlib.sha256(repr(float(model.scale_factor)).encode())
    for name, tensor in model.vae.state_dict().items():
        values = tensor.detach().cpu().contiguous()
        sha.update(f"{name}:{values.dtype}:{tuple(values.shape)}".encode())
        sha.update(values.view(torch.uint8).numpy().tobytes() if values.numel() else b"")
    return sha.hexdigest()


def train_latents(model: LatentDiffusion, dataset_dir: Path, encodings, augment: Augmentation,
                  runs_dir: Path, *, dataset_key: str | None = None) -> LatentDataset:
    """The train split under `augment`, each item with its latent: read from the cache under
    `runs_dir` when an earlier run encoded the same maps with the same autoencoder on the same
    kind of device, else encoded now and cached. A damaged cache file is encoded again.
    `dataset_key` is `dataset_digest(dataset_dir)` when the caller has it already (it hashes
    every file of the dataset: gigabytes in the paper profile)."""
    dataset = augmented(RadioMapDataset(dataset_dir, SPLIT, encodings), augment)
    key = [autoencoder_digest(model), dataset_key or dataset_digest(dataset_dir), SPLIT, model.device.type]
    folder = safe_child(runs_dir, CACHE_FOLDER)
    path = folder / f"{_digest(key + [augment.value])}.pt"
    latents = _read(path, len(dataset))
    if latents is None and augment is Augmentation.NONE:
        turned = _read(folder / f"{_digest(key + [Augmentation.DIHEDRAL.value])}.pt",
                       DIHEDRAL_VARIANTS * len(dataset))
        latents = None if turned is None else turned[:len(dataset)].clone()
    if latents is None:
        latents = encode_dataset(model, dataset)
        with atomic_path(path) as tmp:
            torch.save(latents, tmp)
    return LatentDataset(dataset, latents)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _read(path: Path, rows: int) -> torch.Tensor | None:
    """The cached latents at `path` when the file holds a float32 `[rows, ...]` tensor, else None
    (absent, or damaged: then a warning, and the caller encodes again)."""
    if not path.is_file():
        return None
    try:
        latents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: any unpickling error
        print(f"warning: unreadable latent cache {path} ({type(error).__name__}); encoding again", file=sys.stderr)
        return None
    if not isinstance(latents, torch.Tensor) or latents.dtype != torch.float32 or len(latents) != rows:
        print(f"warning: latent cache {path} does not hold {rows} latents; encoding again", file=sys.stderr)
        return None
    return latents
