"""Progress in a log: plain status lines at a bounded interval (count, fields, rate, ETA), and
the long loops (training, prepare) printing them when stderr is not a terminal."""

from __future__ import annotations

import io

import pytest

from radiodiff.progress import Progress, duration, interval_from_env


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_a_line_at_the_start_then_at_most_one_per_interval_and_one_at_the_end():
    clock, stream = Clock(), io.StringIO()
    bar = Progress(100, "train_ldm", unit="step", stream=stream, interval_s=30.0, clock=clock)
    for _ in range(100):
        clock.now += 1.0  # one step a second: 100 s in all
        bar.update(loss=0.05, lr=1e-4)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 + 3 + 1  # the first step, at 31 s, 61 s, 91 s, and the end
    assert lines[0].startswith("train_ldm: step 1/100 (1%) loss 0.05 lr 1.0e-04 | 1 step/s, ETA 1m39s")
    assert lines[1].startswith("train_ldm: step 31/100 (31%)") and "ETA 1m09s" in lines[1]
    assert lines[-1] == "train_ldm: step 100/100 (100%) loss 0.05 lr 1.0e-04 | done in 1m40s"
    assert "\r" not in stream.getvalue()


def test_a_resumed_loop_rates_only_its_own_steps_and_a_disabled_one_is_silent():
    clock, stream = Clock(), io.StringIO()
    bar = Progress(10, "vae", initial=6, stream=stream, interval_s=5.0, clock=clock)
    clock.now = 2.0
    bar.update(2)
    assert "vae: step 8/10 (80%) | 1 step/s, ETA 2s" in stream.getvalue()
    quiet = io.StringIO()
    with Progress(3, "rank1", stream=quiet, enabled=False, clock=clock) as other:
        other.update(3)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("value, expected", [(None, 30.0), ("5", 5.0), ("0", 30.0), ("-1", 30.0), ("x", 30.0),
                                             ("nan", 30.0)])
def test_the_interval_comes_from_the_environment_when_it_is_a_positive_number(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("RADIODIFF_PROGRESS_SECONDS", raising=False)
    else:
        monkeypatch.setenv("RADIODIFF_PROGRESS_SECONDS", value)
    assert interval_from_env() == expected


def test_durations_read_like_a_person_writes_them():
    assert [duration(s) for s in (0.4, 59, 61, 3599, 3725, float("inf"))] == ["0s", "59s", "1m01s", "59m59s",
                                                                              "1h02m", "?"]


def test_a_training_loop_writes_status_lines_to_a_log(capsys):
    import torch

    from radiodiff.training.config import LoopConfig, OptimConfig
    from radiodiff.training.loop import train_loop

    model = torch.nn.Linear(2, 1)
    config = LoopConfig(total_steps=5, log_every=5, val_every=5, checkpoint_every=5,
                        optim=OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=1, ema_start_step=0, ema_decay=0.5))

    def batches(_start):
        while True:
            yield {"x": torch.ones(4, 2), "y": torch.zeros(4, 1)}

    def loss_fn(net, batch, step, generator):
        loss = torch.nn.functional.mse_loss(net(batch["x"]), batch["y"])
        return loss, {"loss": float(loss.detach())}

    train_loop(model=model, loss_fn=loss_fn, config=config, batches=batches, log=lambda *a, **k: None,
               name="toy_stage")
    err = capsys.readouterr().err
    assert "toy_stage: step 1/5 (20%) loss" in err and "toy_stage: step 5/5 (100%)" in err and "done in" in err


def test_prepare_writes_status_lines_to_a_log(tmp_path, capsys):
    from radiodiff.config import PrepareConfig, SplitSizes
    from radiodiff.data.prepare import run_prepare

    cfg = PrepareConfig(maps=SplitSizes(train=2, val=1, test=1), tx_per_map=2, dynamic=0.0, resolution=32, workers=1)
    run_prepare(cfg, out_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    err = capsys.readouterr().err
    assert "prepare: map 1/4 (25%)" in err and "prepare: map 4/4 (100%) | done in" in err
