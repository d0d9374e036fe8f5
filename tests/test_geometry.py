"""The shipped RadioMapSeer geometry, layout validation, Tx placement and the split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from radiodiff.data.geometry import NUM_MAPS, TX_PER_MAP, load_geometry
from radiodiff.data.layout import read_mask_png, resolve_tx, validate_mask
from radiodiff.data.split import radiounet_split
from radiodiff.errors import UserError


def test_packed_geometry_matches_the_published_counts():
    geometry = load_geometry()
    assert geometry.buildings.shape == (NUM_MAPS, 256, 256)
    assert geometry.cars.shape == (NUM_MAPS, 256, 256)
    assert geometry.tx_sites.shape == (NUM_MAPS, TX_PER_MAP, 2)
    assert 0.15 < geometry.buildings.mean() < 0.35  # city blocks, not noise


def test_packed_geometry_equals_the_shared_pngs():
    from tests.conftest import REPO_ROOT

    source = REPO_ROOT.parent / "shared" / "data" / "radiomapseer"
    if not source.is_dir():
        pytest.skip("shared RadioMapSeer folder not beside the repository")
    geometry = load_geometry()
    for map_id in (0, 267, 700):
        assert np.array_equal(geometry.buildings[map_id], read_mask_png(source / f"png/buildings_complete/{map_id}.png"))
        assert np.array_equal(geometry.cars[map_id], read_mask_png(source / f"png/cars/{map_id}.png"))


def test_every_published_tx_resolves_to_a_free_pixel():
    geometry = load_geometry()
    moved = 0
    for map_id in range(NUM_MAPS):
        scene = geometry.scene(map_id)
        for tx_id in range(TX_PER_MAP):
            row, col = scene.tx(tx_id)
            assert not scene.buildings[row, col]
            moved += (row, col) != tuple(scene.tx_sites[tx_id])
    assert moved == 395  # the rasterised building-edge sites, and only those


def test_unknown_map_and_tx_ids_are_user_errors():
    geometry = load_geometry()
    with pytest.raises(UserError, match="unknown map id 701"):
        geometry.scene(701)
    with pytest.raises(UserError, match="unknown tx id 80"):
        geometry.scene(3).tx(80)


def test_tx_outside_or_deep_inside_a_building_is_refused():
    buildings = np.zeros((16, 16), bool)
    buildings[4:12, 4:12] = True
    assert resolve_tx(buildings, 2, 2) == (2, 2)
    assert resolve_tx(buildings, 4, 6) == (3, 6)  # edge pixel: one step out
    with pytest.raises(UserError, match="inside a building"):
        resolve_tx(buildings, 8, 8)
    with pytest.raises(UserError, match="outside"):
        resolve_tx(buildings, 16, 0)
    with pytest.raises(UserError, match="outside"):
        resolve_tx(buildings, -1, 3)


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.full((256, 256), 7, np.uint8), "not binary"),
        (np.zeros((128, 256), np.uint8), "expected 256x256"),
        (np.zeros((256, 256, 3), np.uint8), "expected 256x256"),
        (np.full((256, 256), np.nan), "finite"),
    ],
)
def test_bad_layouts_are_refused(array, fragment):
    with pytest.raises(UserError, match=fragment):
        validate_mask(array, name="layout")


def test_read_mask_png_errors(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        read_mask_png(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    with pytest.raises(UserError, match="not a readable image"):
        read_mask_png(junk)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.arange(256 * 256, dtype=np.uint32).reshape(256, 256).astype(np.uint8)).save(gray)
    with pytest.raises(UserError, match="not binary"):
        read_mask_png(gray)


def test_radiounet_split():
    split = radiounet_split()
    sizes = {name: len(ids) for name, ids in split.items()}
    assert sizes == {"train": 501, "val": 100, "test": 99}
    every = np.concatenate(list(split.values()))
    assert sorted(every.tolist()) == list(range(1, 701))  # disjoint, map 0 never used
    # numpy's legacy seed-42 shuffle of 0..699, plus one: RadioUNet's loader order
    assert split["train"][:3].tolist() == [159, 501, 397]
