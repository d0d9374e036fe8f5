"""The spread of per-map NMSE: median, pooled, p90, the dark maps, and the histogram rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiodiff.evaluation.distribution import dark_maps, histogram_rows, map_energy, nmse_distribution
from radiodiff.metrics import nmse


def test_pooled_nmse_is_the_nmse_of_all_maps_as_one():
    generator = torch.Generator().manual_seed(0)
    gain = torch.rand(6, 1, 8, 8, generator=generator) * torch.linspace(0.05, 1, 6).view(6, 1, 1, 1)
    pred = gain + 0.05 * torch.randn(gain.shape, generator=generator)
    per_map = nmse(pred, gain).double().numpy()[None]
    pooled = float((pred.double() - gain.double()).pow(2).sum() / gain.double().pow(2).sum())
    spread = nmse_distribution(per_map, map_energy(gain))
    assert spread["nmse_pooled"] == pytest.approx(pooled, rel=1e-6)
    # the same absolute error costs the darkest maps most: the dark mean sits above the pooled one
    assert spread["nmse_dark"] > spread["nmse_pooled"]
    assert spread["nmse_median"] == pytest.approx(float(np.median(per_map)))


def test_one_bad_map_moves_the_mean_and_p90_but_not_the_median():
    per_map = np.full((2, 20), 0.01)
    per_map[:, 7] = 1.0
    energy = np.ones(20)
    spread = nmse_distribution(per_map, energy)
    assert spread["nmse_median"] == pytest.approx(0.01) and spread["nmse_pooled"] == pytest.approx(per_map[0].mean())
    assert spread["nmse_p90"] == pytest.approx(0.01)  # one map in 20 is above the 90th percentile
    per_map[:, 8] = per_map[:, 9] = 1.0
    assert nmse_distribution(per_map, energy)["nmse_p90"] > 0.01


def test_dark_maps_are_the_lowest_energy_share():
    energy = np.array([5.0, 1.0, 3.0, 0.5, 9.0, 2.0, 7.0, 4.0, 6.0, 8.0])
    assert dark_maps(energy).tolist() == [False, False, False, True] + [False] * 6
    assert dark_maps(energy, 0.3).sum() == 3 and dark_maps(energy[:3]).sum() == 1  # at least one map
    with pytest.raises(ValueError):
        dark_maps(energy, 0.0)
    with pytest.raises(ValueError, match="energies"):
        nmse_distribution(np.zeros((1, 4)), energy)


def test_histogram_bins_are_shared_and_count_every_map():
    per_map = {"a": np.array([[0.01, 0.02, 0.5]]), "b": np.array([[0.001, 0.03, 0.04]]), "c": np.zeros((1, 3))}
    rows = histogram_rows(per_map, ["a", "b"], bins=5)
    assert len(rows) == 10 and {r["method"] for r in rows} == {"a", "b"}
    for method in ("a", "b"):
        mine = [r for r in rows if r["method"] == method]
        assert sum(r["maps"] for r in mine) == 3
        assert [r["nmse_bin_low"] for r in mine] == [r["nmse_bin_low"] for r in rows if r["method"] == "a"]
    assert rows[0]["nmse_bin_low"] == pytest.approx(0.001) and rows[4]["nmse_bin_high"] >= 0.5
    # a method of perfect maps (NMSE 0) still lands in the lowest bin
    assert sum(r["maps"] for r in histogram_rows(per_map, ["c", "a"], bins=4) if r["method"] == "c") == 3
