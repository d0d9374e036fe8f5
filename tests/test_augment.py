"""Dihedral augmentation: the turns are the 8 of the square, the Tx moves with its map, a turned
sample is what the condition encoder and the simulator make of the turned city, and the
training stages see every variant."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from conftest import CONDITION, DATA, LOOP
from radiodiff.config import DiffusionConfig, LDMConfig, UNetConfig
from radiodiff.data.augment import DIHEDRAL_VARIANTS, DihedralDataset, augmented, dihedral, dihedral_pixel
from radiodiff.data.conditions import channel_names, encode_condition
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.data.geometry import load_geometry
from radiodiff.options import Augmentation
from radiodiff.sim import CitySimulator
from radiodiff.stages.common import run_folder


def test_the_eight_variants_are_distinct_and_variant_zero_is_the_map():
    image = torch.arange(16.0).reshape(1, 4, 4)
    variants = [dihedral(image, v) for v in range(DIHEDRAL_VARIANTS)]
    assert torch.equal(variants[0], image)
    assert len({tuple(v.flatten().tolist()) for v in variants}) == DIHEDRAL_VARIANTS


def test_a_pixel_lands_where_dihedral_pixel_says():
    size = 5
    for variant in range(DIHEDRAL_VARIANTS):
        for row, col in [(0, 0), (1, 3), (4, 2)]:
            image = torch.zeros(size, size)
            image[row, col] = 1.0
            turned = dihedral(image, variant)
            assert turned[dihedral_pixel(row, col, size, variant)] == 1.0, (variant, row, col)


def test_a_turned_sample_is_the_condition_of_the_turned_city(dataset):
    """The turned condition equals the encoder's own condition of the turned buildings, cars and
    Tx (LOS and car shadow sample rays by rounding, so a few edge pixels may differ)."""
    base = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    turned_set = DihedralDataset(base)
    assert len(turned_set) == DIHEDRAL_VARIANTS * len(base)
    with_cars = next(i for i in range(len(base)) if base[i]["cars"])
    for variant in (1, 2, 5):
        sample = turned_set[variant * len(base) + with_cars]
        original = base[with_cars]
        assert sample["map_id"] == original["map_id"] and sample["cars"]
        assert torch.equal(sample["gain"], dihedral(original["gain"], variant))
        row, col = (int(v) for v in sample["tx"])
        assert sample["cond"][1, row, col] == 1.0  # the Tx channel's pixel is the moved Tx
        cond = sample["cond"].numpy()
        expected = encode_condition(cond[0] > 0, cond[2], row, col, CONDITION.encodings)
        error = np.abs(expected - cond)
        names = channel_names(CONDITION.encodings)
        exact = [i for i, name in enumerate(names) if name not in ("los", "los_log_distance", "car_shadow")]
        assert error[exact].max() < 1e-5  # layout, Tx, cars and log-distance turn exactly
        for los in (names.index("los"), names.index("los_log_distance")):
            assert (error[los] > 1e-5).mean() < 0.02
        # A ray sample that rounds half-way goes one way whichever way the map is turned: at 32 px
        # the shadow differs by about a tenth of its mean (less on finer grids).
        shadow = names.index("car_shadow")
        assert error[shadow].mean() < 0.25 * cond[shadow].mean()


def test_the_simulator_has_no_preferred_direction():
    """The premise of the augmentation: a real layout turned and mirrored, simulated from the
    turned Tx, gives the turned map up to the grid's tie-breaks between near-equal paths
    (NMSE 2e-4 to 8e-3 over the Tx tried, below the 0.013-0.02 the models reach)."""
    buildings = load_geometry().scene(1).buildings
    free = np.argwhere(~buildings)
    row, col = (int(v) for v in free[len(free) // 3])
    reference = torch.from_numpy(CitySimulator(buildings).gain_gray(row, col).astype(np.float32) / 255)
    for variant in (1, 6):
        turned = dihedral(torch.from_numpy(buildings), variant).numpy()
        moved = dihedral_pixel(row, col, buildings.shape[0], variant)
        simulated = torch.from_numpy(CitySimulator(turned).gain_gray(*moved).astype(np.float32) / 255)
        expected = dihedral(reference, variant)
        nmse = float(((simulated - expected) ** 2).sum() / (expected**2).sum())
        assert nmse < 0.01, (variant, nmse)


def test_augment_none_leaves_the_dataset_alone(dataset):
    base = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    assert augmented(base, Augmentation.NONE) is base
    assert len(augmented(base, Augmentation.DIHEDRAL)) == DIHEDRAL_VARIANTS * len(base)


def test_augmentation_keys_its_own_resume_folder(tmp_path):
    """A run trained on the plain maps never resumes as an augmented one, or back."""
    cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(num_steps=50), data=DATA, train=LOOP)
    turned = replace(cfg, data=replace(DATA, augment=Augmentation.DIHEDRAL))
    assert run_folder(tmp_path, "ldm", cfg, CONDITION) != run_folder(tmp_path, "ldm", turned, CONDITION)


def test_the_ldm_encodes_every_variant(dataset, vae_file, monkeypatch):
    """Under augmentation the denoiser trains on each variant's own latent (a turned map's
    latent is not the turned latent), so the latents cover 8x the train maps."""
    import radiodiff.stages.latents as latents_module
    import radiodiff.stages.ldm as ldm_stage

    encoded = {}
    real_encode = latents_module.encode_dataset

    def spy(model, data):
        encoded["latents"] = real_encode(model, data)
        encoded["maps"] = len(data)
        return encoded["latents"]

    monkeypatch.setattr(latents_module, "encode_dataset", spy)
    cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(num_steps=50), sample_steps=1,
                    data=replace(DATA, augment=Augmentation.DIHEDRAL), train=replace(LOOP, total_steps=2))
    result = ldm_stage.train_ldm(cfg, CONDITION, dataset_dir=dataset / "data", vae_path=vae_file[0],
                                 work_dir=dataset / "work_augment", log=lambda m, s: None, progress=False)
    plain = len(RadioMapDataset(dataset / "data", "train", CONDITION.encodings))
    latents = encoded["latents"]
    assert encoded["maps"] == len(latents) == DIHEDRAL_VARIANTS * plain
    quarter_turn = latents[plain]  # variant 1 of the first map
    assert not torch.allclose(quarter_turn, dihedral(latents[0], 1), atol=1e-4)
    assert np.isfinite(result.metrics["test_nmse"])
