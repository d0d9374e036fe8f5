"""new_layout's edited layouts: banked cities with buildings taken away, made as prepare makes
its samples, and served by the lookup within the bound and by the cold path beyond it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage

from radiodiff.artifacts.denoiser import load_ldm
from radiodiff.bank import layout_embedding
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.data.geometry import load_geometry
from radiodiff.evaluation.edited_layouts import edited_maps, edited_originals, edited_scene_id, remove_buildings
from radiodiff.evaluation.methods import Toolkit
from radiodiff.evaluation.scenarios import EDITED_FAMILIES, edited_methods, nearest_distances
from radiodiff.stages.bank import fill_bank, load_scenes
from tests.conftest import CONDITION, TINY_DATA
from tests.test_flux_stages import FLUX

LAYOUT = load_geometry().scene(0).buildings


@pytest.fixture(scope="module")
def banked(dataset, vae_file, ldm_file, tmp_path_factory):
    """The toy denoiser and a bank of its train and test scenes, in a folder of this module's own."""
    model, _, condition = load_ldm(ldm_file[0], vae_file[0])
    bank_dir = tmp_path_factory.mktemp("edited_bank")
    fill_bank(model, ldm_file[0], bank_dir, load_scenes(dataset / "data", FLUX.splits), FLUX, condition.channels)
    return model, ldm_file[0], bank_dir


@pytest.mark.parametrize("share", [0.0, 0.2, 0.5, 1.0])
def test_whole_buildings_go_until_the_share_is_reached(share):
    edited = remove_buildings(LAYOUT, share, seed=3)
    assert not (edited & ~LAYOUT).any()  # free pixels stay free
    labels, count = ndimage.label(LAYOUT)
    kept = [edited[labels == k].all() for k in range(1, count + 1)]
    assert all(edited[labels == k].all() or not edited[labels == k].any() for k in range(1, count + 1))
    removed = 1.0 - edited.sum() / LAYOUT.sum()
    assert removed >= share - 1e-9
    # the last building taken is the one that reached the share: without it, short of it
    assert share == 0.0 and removed == 0.0 or sum(kept) < count
    if share == 1.0:
        assert not edited.any()


def test_one_seed_removes_a_superset_as_the_share_grows_and_bad_shares_are_refused():
    small, large = remove_buildings(LAYOUT, 0.2, seed=1), remove_buildings(LAYOUT, 0.6, seed=1)
    assert not (large & ~small).any() and large.sum() < small.sum()
    with pytest.raises(ValueError, match="share must be in"):
        remove_buildings(LAYOUT, 1.5, seed=1)


def test_an_unedited_layout_is_the_prepared_sample_and_the_distance_grows_with_the_share(dataset):
    train = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    (original,) = edited_originals(train.index, 1)
    maps = edited_maps([original], (0.0, 0.3, 1.0), TINY_DATA.resolution, CONDITION.encodings)
    row = int(train.index.index[(train.index["map_id"] == original[0]) & (train.index["tx_id"] == original[1])
                                & ~train.index["cars"]][0])
    assert torch.equal(maps.cond[0], train[row]["cond"]) and torch.equal(maps.gain[0], train[row]["gain"])
    assert maps.maps == tuple(edited_scene_id(original[0], k) for k in range(3))
    embeddings = [layout_embedding(maps.buildings([k])[0]) for k in range(3)]
    distance = [float(np.sqrt(np.mean((e - embeddings[0]) ** 2))) for e in embeddings]
    assert distance[0] == 0.0 < distance[1] < distance[2]
    assert not maps.buildings([2]).any() and maps.gain[2].gt(0).all()  # an empty city: every pixel lit


def test_the_served_policy_takes_the_nearest_within_the_bound_and_the_cold_path_beyond(banked, dataset):
    model, ldm_path, bank_dir = banked
    train = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    maps = edited_maps(edited_originals(train.index, 1), (0.1, 1.0), TINY_DATA.resolution, CONDITION.encodings)
    exclude = frozenset(load_scenes(dataset / "data", ["test"]).ids.tolist())
    kit = Toolkit(model, maps, FLUX, ldm_path, bank_dir, None, exclude, CONDITION.encodings)
    near, far = nearest_distances(kit, FLUX.t_mid, 0)
    assert near < far
    kit = dataclasses.replace(kit, flux=dataclasses.replace(FLUX, nearest_max_distance=(near + far) / 2), banks={})
    own, anywhere, served = edited_methods(kit)
    assert tuple(m.family for m in (own, anywhere, served)) == EDITED_FAMILIES
    with torch.no_grad():
        own_maps, anywhere_maps, served_maps = (m.run(0, [0, 1]) for m in (own, anywhere, served))
    assert torch.equal(served_maps[0], anywhere_maps[0])  # within the bound: the nearest layout's midpoint
    assert torch.allclose(served_maps[1], own_maps[1], atol=1e-5)  # beyond: its own, computed now
    assert not torch.allclose(anywhere_maps[0], own_maps[0], atol=1e-5)
    assert served.stats == {"nearest": 1, "miss": 1}
