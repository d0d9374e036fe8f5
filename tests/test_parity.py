"""Compute parity: the baseline's step count comes from the generative chain's measured time."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
from conftest import CONDITION, DATA, LOOP

from radiodiff.config import BaselineConfig
from radiodiff.errors import UserError
from radiodiff.stages import baseline as baseline_stage
from radiodiff.stages.parity import GENERATIVE_STAGES, generative_train_seconds, plan_steps, stretched


def test_the_plan_lasts_the_generative_time_and_never_undercuts_params():
    assert plan_steps(10.0, 7.25, configured=4) == 91  # ceil(72.5 x 1.25): at least the time, with a margin
    assert plan_steps(0.5, 2.0, configured=4) == 4  # a cheaper chain keeps the configured run
    with pytest.raises(ValueError):
        plan_steps(10.0, 0.0, configured=4)


def test_a_longer_run_keeps_as_many_validations_and_checkpoints():
    longer = stretched(LOOP, 40)  # LOOP: 4 steps, log every 2, validate every 4, checkpoint every 2
    assert (longer.total_steps, longer.log_every, longer.val_every, longer.checkpoint_every) == (40, 20, 40, 20)
    assert longer.optim == LOOP.optim


def test_the_rate_is_the_steady_one_not_the_first_steps():
    """A slow first step (allocation, a loader starting) would lower the rate and plan too few
    steps: the probe times only the steps after its warm-up."""
    import time

    import torch
    from torch.nn import functional as F

    from radiodiff.stages.parity import measure_steps_per_second
    from radiodiff.training.batching import loader_factory

    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))

    def loss_fn(model, batch, step, generator):
        time.sleep(3.0 if step == 0 else 0.01)
        return F.mse_loss(model(batch[0]), batch[1]), {}

    model = torch.nn.Linear(4, 1)
    before = [p.detach().clone() for p in model.parameters()]
    rate = measure_steps_per_second(model, loss_fn, loader_factory(data, batch_size=8, seed=0), LOOP)
    # steady: ~1 / 0.01 s; with the first step counted: 80 steps / (3 s + 0.8 s) = 21
    assert 40 < rate < 100
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # trained a copy


def test_the_generative_time_sums_its_stages_and_names_the_one_missing(tmp_path):
    for seconds, stage in zip((59.5, 120.0, 20.5), GENERATIVE_STAGES):
        (tmp_path / f"{stage}.json").write_text(json.dumps({"train_seconds": seconds, "test_nmse": 0.1}))
    assert generative_train_seconds(tmp_path) == 200.0
    (tmp_path / "tune_tail.json").write_text(json.dumps({"flux_nmse": 0.1}))  # written before train_seconds existed
    with pytest.raises(UserError, match="run tune_tail first, or set baseline.compute_parity: false"):
        generative_train_seconds(tmp_path)
    (tmp_path / "train_vae.json").unlink()
    with pytest.raises(UserError, match="train_vae"):
        generative_train_seconds(tmp_path)


def test_a_parity_run_trains_past_its_configured_steps_and_a_restart_keeps_the_plan(dataset, tmp_path, monkeypatch):
    cfg = BaselineConfig(base_channels=8, channel_mults=(1, 2), data=DATA, train=LOOP, compute_parity=True)
    common = {"dataset_dir": dataset / "data", "work_dir": tmp_path, "log": lambda m, s: None, "progress": False}

    def train_baseline(*args, **kwargs):
        result = baseline_stage.train_baseline(*args, **kwargs)
        plt.close(result.figure)  # the stage hands its figure to the caller, which closes it
        return result

    first = train_baseline(cfg, CONDITION, parity_seconds=1.0, **common).metrics
    # a tiny network runs far more than LOOP's 4 steps a second on any machine
    assert first["parity_steps"] > LOOP.total_steps and first["generative_train_seconds"] == 1.0
    assert first["train_seconds_over_generative"] == pytest.approx(first["train_seconds"] / 1.0)

    def no_second_probe(*args, **kwargs):
        raise AssertionError("the stored plan was not reused")

    monkeypatch.setattr(baseline_stage, "measure_steps_per_second", no_second_probe)
    again = train_baseline(cfg, CONDITION, parity_seconds=1.0, **common).metrics  # resumes the finished run
    assert again["parity_steps"] == first["parity_steps"] and again["test_nmse"] == first["test_nmse"]
    monkeypatch.setattr(baseline_stage, "measure_steps_per_second", lambda *args, **kwargs: 10.0)
    longer = train_baseline(cfg, CONDITION, parity_seconds=2.0, **common).metrics  # a new chain time: a new plan
    assert longer["parity_steps"] == 25 and longer["generative_train_seconds"] == 2.0  # 2 s x 10 step/s x 1.25
