"""Compute parity: the baseline's step count comes from the generative chain's measured time."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
from conftest import CONDITION, DATA, LOOP

from radiodiff.config import BaselineConfig
from radiodiff.errors import UserError
from radiodiff.stages import baseline as baseline_stage
from radiodiff.stages.parity import (
    GENERATIVE_STAGES,
    ParityPlan,
    coda_loop,
    generative_train_seconds,
    plan_steps,
    stretched,
    train_to_parity,
)
from radiodiff.training.loop import TrainResult


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


def test_a_coda_runs_at_the_floor_learning_rate_and_leaves_the_planned_schedule_alone():
    from radiodiff.training.loop import _lr

    coda = coda_loop(LOOP, 6)
    assert coda.total_steps == 10 and coda_loop(LOOP, 0) == LOOP
    assert [_lr(coda, step) for step in range(5, 11)] == [LOOP.optim.min_lr] * 6
    # the learning rates a planned step trains with are the plan's: the coda starts after them
    assert [_lr(LOOP, step) for step in range(1, 5)] != [_lr(coda, step) for step in range(1, 5)]


def _result(step: int, seconds: float, rate: float) -> TrainResult:
    return TrainResult(step=step, train_loss=None, val_metrics={}, wall_time_s=0.0, steps_per_s=rate, ema=None,
                       checkpoint=None, train_seconds=seconds)


def test_a_run_that_finished_its_plan_early_trains_on_until_the_time_is_reached():
    """A machine that sped up after the probe ends the planned steps early: codas sized from
    the last call's rate make up the rest, and each grown plan is saved before it trains."""
    calls, saved, said = [], [], []
    clock = iter([(30.0, 8.0), (31.5, 10.0), (33.0, 10.0)])  # (the run's seconds, this call's step/s)

    def train(loop):
        calls.append((loop.total_steps, loop.optim.lr))
        seconds, rate = next(clock)
        return _result(loop.total_steps, seconds, rate)

    plan = ParityPlan(generative_seconds=32.0, steps_per_s=1.25, total_steps=40)
    result, final = train_to_parity(train, stretched(LOOP, 40), plan, saved.append, said.append)
    # 2 s short at 8 step/s, 25% over: 20 steps; then 0.5 s short at 10 step/s: 7, so the floor of 10
    assert [grown.coda_steps for grown in saved] == [20, 30] and final == saved[-1]
    assert calls == [(40, LOOP.optim.lr), (60, LOOP.optim.min_lr), (70, LOOP.optim.min_lr)]
    assert result.train_seconds == 33.0 and len(said) == 2 and "more at the floor learning rate" in said[0]


def test_a_restart_trains_its_stored_coda_first_and_a_run_long_enough_adds_none():
    calls = []

    def train(loop):
        calls.append(loop.total_steps)
        return _result(loop.total_steps, 35.0, 0.0)  # resumed where it had ended: no step this call

    plan = ParityPlan(generative_seconds=32.0, steps_per_s=1.25, total_steps=40, coda_steps=12)
    saved = []
    result, final = train_to_parity(train, stretched(LOOP, 40), plan, saved.append, lambda line: None)
    assert calls == [40, 52] and final == plan and saved == [] and result.step == 52


def test_a_parity_run_whose_plan_ends_early_trains_a_coda_and_a_restart_keeps_it(dataset, tmp_path, monkeypatch):
    """A probe that under-rates the machine (here 1 step/s) plans too few steps: the stage then
    trains on at the floor learning rate until the chain's seconds are reached."""
    cfg = BaselineConfig(base_channels=8, channel_mults=(1, 2), data=DATA, train=LOOP, compute_parity=True)
    logged = []
    common = {"dataset_dir": dataset / "data", "work_dir": tmp_path, "progress": False, "parity_seconds": 3.0}

    def train_baseline(log):
        result = baseline_stage.train_baseline(cfg, CONDITION, log=log, **common)
        plt.close(result.figure)
        return result.metrics

    monkeypatch.setattr(baseline_stage, "measure_steps_per_second", lambda *args, **kwargs: 1.0)
    first = train_baseline(lambda metrics, step: logged.append((step, metrics)))
    assert first["parity_steps"] == LOOP.total_steps  # ceil(3 s x 1 step/s x 1.25): the configured 4
    assert first["parity_coda_steps"] > 0 and first["train_seconds"] >= 3.0
    coda_lrs = {m["train/lr"] for step, m in logged if "train/lr" in m and step > LOOP.total_steps}
    assert coda_lrs == {LOOP.optim.min_lr}

    def no_second_probe(*args, **kwargs):
        raise AssertionError("the stored plan was not reused")

    monkeypatch.setattr(baseline_stage, "measure_steps_per_second", no_second_probe)
    again = train_baseline(lambda metrics, step: None)  # resumes the finished run: nothing more to train
    assert again["parity_coda_steps"] == first["parity_coda_steps"] and again["test_nmse"] == first["test_nmse"]
