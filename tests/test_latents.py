"""The train latents' cache: what the stages train on is the encoding itself, read or fresh."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import radiodiff.stages.latents as latents_module
from radiodiff.artifacts.denoiser import load_ldm
from radiodiff.data.augment import augmented
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.options import Augmentation
from radiodiff.stages.latents import CACHE_FOLDER, autoencoder_digest, encode_dataset, train_latents
from tests.conftest import CONDITION


@pytest.fixture
def counted_encodings(monkeypatch):
    """How many maps `encode_dataset` encoded, call by call."""
    calls: list[int] = []
    real = latents_module.encode_dataset

    def spy(model, dataset):
        calls.append(len(dataset))
        return real(model, dataset)

    monkeypatch.setattr(latents_module, "encode_dataset", spy)
    return calls


def _fresh(model, dataset_dir, augment):
    return encode_dataset(model, augmented(RadioMapDataset(dataset_dir, "train", CONDITION.encodings), augment))


def test_a_second_run_reads_the_latents_the_first_encoded(dataset, vae_file, ldm_file, tmp_path, counted_encodings):
    model = load_ldm(ldm_file[0], vae_file[0])[0]
    data = dataset / "data"
    first = train_latents(model, data, CONDITION.encodings, Augmentation.DIHEDRAL, tmp_path)
    second = train_latents(model, data, CONDITION.encodings, Augmentation.DIHEDRAL, tmp_path)
    assert len(counted_encodings) == 1 and len(first) == len(second) == counted_encodings[0]
    assert torch.equal(second.latents, _fresh(model, data, Augmentation.DIHEDRAL))
    item = second[3]
    assert torch.equal(item["latent"], second.latents[3]) and {"cond", "gain"} <= set(item)


def test_the_plain_set_is_the_first_rows_of_its_cached_augmentation(dataset, vae_file, ldm_file, tmp_path,
                                                                   counted_encodings):
    model = load_ldm(ldm_file[0], vae_file[0])[0]
    data = dataset / "data"
    train_latents(model, data, CONDITION.encodings, Augmentation.DIHEDRAL, tmp_path)
    plain = train_latents(model, data, CONDITION.encodings, Augmentation.NONE, tmp_path)
    assert len(counted_encodings) == 1
    assert torch.equal(plain.latents, _fresh(model, data, Augmentation.NONE))
    assert len(plain) == len(RadioMapDataset(data, "train", CONDITION.encodings))


def test_another_autoencoder_encodes_again(dataset, vae_file, ldm_file, tmp_path, counted_encodings):
    model = load_ldm(ldm_file[0], vae_file[0])[0]
    data = dataset / "data"
    train_latents(model, data, CONDITION.encodings, Augmentation.NONE, tmp_path)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.vae.parameters()).add_(1e-3)
    assert autoencoder_digest(other) != autoencoder_digest(model)
    moved = train_latents(other, data, CONDITION.encodings, Augmentation.NONE, tmp_path)
    assert len(counted_encodings) == 2
    assert torch.equal(moved.latents, _fresh(other, data, Augmentation.NONE))
    rescaled = dataclasses.replace(model, scale_factor=model.scale_factor * 2)
    assert autoencoder_digest(rescaled) != autoencoder_digest(model)
    assert len(list((tmp_path / CACHE_FOLDER).glob("*.pt"))) == 2


def test_a_damaged_cache_is_encoded_again_with_a_warning(dataset, vae_file, ldm_file, tmp_path, capsys,
                                                        counted_encodings):
    model = load_ldm(ldm_file[0], vae_file[0])[0]
    data = dataset / "data"
    train_latents(model, data, CONDITION.encodings, Augmentation.NONE, tmp_path)
    (cached,) = (tmp_path / CACHE_FOLDER).glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:100])
    again = train_latents(model, data, CONDITION.encodings, Augmentation.NONE, tmp_path)
    assert "unreadable latent cache" in capsys.readouterr().err
    assert len(counted_encodings) == 2
    assert torch.equal(again.latents, _fresh(model, data, Augmentation.NONE))
    torch.save(again.latents[:2], cached)  # a readable file of the wrong size
    train_latents(model, data, CONDITION.encodings, Augmentation.NONE, tmp_path)
    assert "does not hold" in capsys.readouterr().err and len(counted_encodings) == 3
