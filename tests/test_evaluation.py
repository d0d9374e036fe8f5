"""The evaluate stage's statistics, timing and trajectory-similarity helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiodiff.evaluation.consistency import pair_similarity
from radiodiff.evaluation.figures import pareto_front
from radiodiff.evaluation.stats import interval, relative_loss
from radiodiff.evaluation.timing import time_interleaved


def test_interval_is_the_student_t_95_percent_half_width():
    mean, half = interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302652729911275 / np.sqrt(3))  # t_{0.975, 2} * sd / sqrt(n)
    assert interval([0.5, 0.5, 0.5]) == (0.5, 0.0)
    assert interval([0.7]) == (0.7, 0.0)


def test_relative_loss_is_positive_when_worse_and_paired_by_seed():
    # NMSE 10% higher than the reference on every seed: a loss of exactly 0.1, no spread.
    assert relative_loss([1.1, 2.2], [1.0, 2.0], higher_is_better=False) == pytest.approx((0.1, 0.0))
    # SSIM lower is worse.
    loss, _ = relative_loss([0.9, 0.9], [1.0, 1.0], higher_is_better=True)
    assert loss == pytest.approx(0.1)
    assert relative_loss([0.9], [1.0], higher_is_better=False)[0] < 0


def test_pareto_front_keeps_only_undominated_points_by_time():
    time_ms = np.array([1.0, 2.0, 3.0, 4.0, 0.5])
    error = np.array([0.5, 0.6, 0.2, 0.1, 0.9])
    assert pareto_front(time_ms, error).tolist() == [4, 0, 2, 3]


def test_time_interleaved_runs_each_job_once_per_round_in_turn():
    calls = []
    jobs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    result = time_interleaved(jobs, repeats=3, counts={"a": 1, "b": 4})
    assert calls == ["a", "b"] * 3
    for stats in result.values():
        assert 0 <= stats["ms_min"] <= stats["ms_median"] <= stats["ms_max"]


def test_pair_similarity_separates_scenes():
    base = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    latents = torch.stack([base[0], base[0] * 2.0, base[1], -base[0]])  # scene 0: rows 0-1, scene 1: rows 2-3
    same, other = pair_similarity(latents, torch.tensor([0, 0, 1, 1]))
    # same-scene pairs: (0,1) cos 1, (2,3) cos(b1, -b0); cross pairs include (0,3) and (1,3) with cos -1
    cos = torch.nn.functional.cosine_similarity(base[1].flatten(), -base[0].flatten(), dim=0).item()
    assert same == pytest.approx((1.0 + cos) / 2, abs=1e-6)
    assert other < same
