"""Tests of the shared training loop and its parts, on toy MLPs and a few dozen steps."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from radiodiff.errors import RunFailure, UserError
from radiodiff.options import Precision
from radiodiff.training.batching import BatchOrder, ResumableBatchSampler
from radiodiff.training.config import LoopConfig, OptimConfig
from radiodiff.training.ema import EMA
from radiodiff.training.loop import out_of_memory_message, train_loop
from radiodiff.training.batching import loader_factory
from radiodiff.training.checkpoint import (
    checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, read_payload, save_checkpoint,
)
from radiodiff.training.lr_schedule import learning_rate, set_learning_rate
from radiodiff.training.rng import (
    STREAM_TRAIN_STEP, STREAM_VALIDATION, capture_rng_state, derive_seed, restore_rng_state,
)

PAPER_LR = dict(base_lr=5e-5, min_lr=5e-6, warmup_steps=100, total_steps=1100, power=0.96)


# --- learning-rate schedule ---------------------------------------------------------


def test_warmup_is_linear_from_zero_to_base_lr():
    lrs = [learning_rate(s, **PAPER_LR) for s in range(101)]
    assert lrs[0] == 0.0
    assert lrs[100] == pytest.approx(5e-5)
    assert np.allclose(np.diff(lrs), 5e-5 / 100, rtol=1e-9, atol=0)


def test_decay_is_polynomial_with_an_absolute_floor():
    assert learning_rate(600, **PAPER_LR) == pytest.approx(5e-5 * 0.5**0.96)
    # At 95% progress 5e-5 * 0.05**0.96 < 5e-6, so the floor (not 5e-6 * 5e-5) holds.
    assert learning_rate(1050, **PAPER_LR) == 5e-6
    assert learning_rate(1100, **PAPER_LR) == 5e-6
    assert learning_rate(5000, **PAPER_LR) == 5e-6
    decay = [learning_rate(s, **PAPER_LR) for s in range(100, 1101)]
    assert min(decay) == 5e-6 and all(a >= b for a, b in zip(decay, decay[1:]))


def test_schedule_without_warmup_starts_at_base_lr_and_rejects_bad_arguments():
    assert learning_rate(0, base_lr=1.0, min_lr=0.1, warmup_steps=0, total_steps=10, power=1.0) == 1.0
    with pytest.raises(ValueError):
        learning_rate(0, base_lr=1e-5, min_lr=1e-4, warmup_steps=0, total_steps=10, power=1.0)
    with pytest.raises(ValueError):
        learning_rate(0, base_lr=1.0, min_lr=0.1, warmup_steps=10, total_steps=10, power=1.0)


def test_set_learning_rate_changes_every_param_group():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": 3.0}], lr=1.0)
    set_learning_rate(optimizer, 0.25)
    assert [group["lr"] for group in optimizer.param_groups] == [0.25, 0.25]


# --- EMA ----------------------------------------------------------------------------


class _Scalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("count", torch.tensor(0.0))


def test_ema_copies_before_start_then_averages_and_copies_buffers():
    model = _Scalar()
    ema = EMA(model, decay=0.9, start_step=2)
    expected = []
    for step, value in enumerate([1.0, 2.0, 3.0], start=1):
        with torch.no_grad():
            model.w.fill_(value)
            model.count.fill_(step)
        ema.update(model, step)
        expected.append(ema.ema_model.w.item())
        assert ema.ema_model.count.item() == step
    assert expected == pytest.approx([1.0, 0.9 * 1.0 + 0.1 * 2.0, 0.9 * 1.1 + 0.1 * 3.0])
    assert not ema.ema_model.w.requires_grad
    target = _Scalar()
    ema.copy_to(target)
    assert target.w.item() == pytest.approx(1.29)
    restored = EMA(_Scalar(), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.ema_model.w.item() == pytest.approx(1.29)


# --- batch order --------------------------------------------------------------------


def test_batch_order_is_seeded_and_covers_each_epoch_once():
    order = BatchOrder(num_samples=20, batch_size=5, seed=7)
    stream = order.iter_from(0)
    first = [next(stream) for _ in range(8)]
    again = BatchOrder(num_samples=20, batch_size=5, seed=7).iter_from(0)
    assert first == [next(again) for _ in range(8)]
    assert sorted(sum(first[:4], [])) == list(range(20)) == sorted(sum(first[4:], []))
    assert first[:4] != first[4:]
    other = BatchOrder(num_samples=20, batch_size=5, seed=8).iter_from(0)
    assert first[:4] != [next(other) for _ in range(4)]


def test_batch_order_resumes_mid_epoch_and_handles_the_last_partial_batch():
    order = BatchOrder(num_samples=22, batch_size=5, seed=1)
    stream = order.iter_from(0)
    straight = [next(stream) for _ in range(11)]
    assert order.batches_per_epoch == 4 and order.position(6) == (1, 2)
    resumed = order.iter_from(6)
    assert straight[6:] == [next(resumed) for _ in range(5)]
    assert [order.batch(i) for i in range(11)] == straight
    short = BatchOrder(num_samples=22, batch_size=5, seed=1, drop_last=False)
    assert [len(short.batch(i)) for i in range(5)] == [5, 5, 5, 5, 2]
    with pytest.raises(UserError):
        BatchOrder(num_samples=3, batch_size=5, seed=1)


def test_resumable_batch_sampler_drives_a_dataloader():
    data = TensorDataset(torch.arange(12))
    order = BatchOrder(num_samples=12, batch_size=4, seed=2)
    loader = DataLoader(data, batch_sampler=ResumableBatchSampler(order, start=2))
    batches = iter(loader)
    assert [next(batches)[0].tolist() for _ in range(3)] == [order.batch(i) for i in range(2, 5)]


# --- checkpoints --------------------------------------------------------------------


def _mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def _trained_parts(seed: int):
    model = _mlp(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMA(model, decay=0.5)
    model(torch.randn(8, 4)).pow(2).mean().backward()
    optimizer.step()
    ema.update(model, 1)
    return model, optimizer, ema


def _assert_same(a, b) -> None:
    """Recursive equality of nested containers, with torch.equal for tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_checkpoint_round_trip_restores_every_state(tmp_path):
    model, optimizer, ema = _trained_parts(seed=0)
    rng = capture_rng_state()
    expected_draws = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    path = save_checkpoint(
        tmp_path / "a.pt", model=model, ema=ema, optimizer=optimizer, step=7, rng=rng,
        extra={"scale_factor": 0.18, "channels": [3, 4]},
    )
    fresh_model, fresh_optimizer, fresh_ema = _trained_parts(seed=1)
    ckpt = load_checkpoint(path, model=fresh_model, ema=fresh_ema, optimizer=fresh_optimizer)
    assert ckpt.step == 7 and ckpt.extra == {"scale_factor": 0.18, "channels": [3, 4]}
    _assert_same(fresh_model.state_dict(), model.state_dict())
    _assert_same(fresh_ema.state_dict(), ema.state_dict())
    _assert_same(fresh_optimizer.state_dict(), optimizer.state_dict())
    restore_rng_state(ckpt.rng)
    draws = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(draws[0], expected_draws[0]) and np.array_equal(draws[1], expected_draws[1])
    assert draws[2] == expected_draws[2]


def test_truncated_or_foreign_checkpoints_raise_user_error_naming_the_file(tmp_path):
    model, optimizer, ema = _trained_parts(seed=0)
    path = save_checkpoint(tmp_path / "c.pt", model=model, ema=ema, optimizer=optimizer, step=1, rng=None)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="c.pt"):
        load_checkpoint(path, model=model)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    other = save_checkpoint(tmp_path / "d.pt", model=model, ema=None, optimizer=None, step=1, rng=None)
    with pytest.raises(UserError, match="does not match"):
        load_checkpoint(other, model=nn.Linear(2, 2))


class _Payload:
    """An arbitrary class: a weights_only load must refuse to rebuild it."""


def test_checkpoints_never_unpickle_arbitrary_objects(tmp_path):
    torch.save({"format": "radiodiff-checkpoint", "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    model = _mlp()
    with pytest.raises(TypeError, match="float64"):
        save_checkpoint(tmp_path / "e.pt", model=model, ema=None, optimizer=None, step=0, rng=None,
                        extra={"scale": np.float64(0.5)})
    assert not (tmp_path / "e.pt").exists()


def test_latest_checkpoint_and_pruning_keep_the_newest(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    model = _mlp()
    for step in (5, 40, 100, 7):
        path = checkpoint_path(tmp_path, step)
        save_checkpoint(path, model=model, ema=None, optimizer=None, step=step, rng=None)
    assert latest_checkpoint(tmp_path).name == "step_00000100.pt"
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000040.pt", "step_00000100.pt"]


# --- the loop -----------------------------------------------------------------------


def _dataset(n: int = 64) -> TensorDataset:
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(n, 4, generator=generator)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.3)


class _JitterDataset(TensorDataset):
    """Draws from torch's global RNG per item: exact resume then rests on the saved RNG state."""

    def __getitem__(self, index):
        x, y = super().__getitem__(index)
        return x + 0.01 * torch.randn(x.shape), y


def _noisy_loss(model, batch, step, generator):
    """Input noise from the step generator and dropout from the seeded global RNG."""
    x, y = batch
    pred = model(x + 0.1 * torch.randn(x.shape, generator=generator))
    loss = F.mse_loss(pred, y)
    return loss, {"mse": loss.item()}


def _config(**overrides) -> LoopConfig:
    optim = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2, ema_decay=0.8, ema_start_step=4)
    return LoopConfig(**{"total_steps": 12, "log_every": 5, "val_every": 4, "optim": optim, **overrides})


def test_loss_decreases_and_validation_sees_the_ema_model():
    logs, seen = [], []

    def val_fn(model, step):
        seen.append((model, step, torch.is_grad_enabled(), model.training))
        return {"loss": 0.0}

    result = train_loop(
        model=_mlp(), loss_fn=_noisy_loss, batches=loader_factory(_dataset(), batch_size=16, seed=0),
        config=_config(total_steps=80, log_every=10, val_every=40), log=lambda m, s: logs.append((s, m)),
        val_fn=val_fn, progress=False,
    )
    train = [m["train/loss"] for _, m in logs if "train/loss" in m]
    assert len(train) == 8 and train[-1] < 0.2 * train[0]
    assert result.step == 80 and result.train_loss == train[-1] and result.val_metrics == {"loss": 0.0}
    # The EMA model (in eval mode), at steps 40 and 80, without gradients.
    expected = [(True, step, False, False) for step in (40, 80)]
    assert [(m is result.ema.ema_model, s, g, t) for m, s, g, t in seen] == expected
    assert logs[-1][1]["train/lr"] == pytest.approx(1e-3) and result.steps_per_s > 0


def test_gradient_accumulation_equals_one_big_batch():
    def mse(model, batch, step, generator):
        x, y = batch
        return F.mse_loss(model(x), y), {}

    def run(batch_size: int, accum_steps: int) -> tuple[nn.Module, list[float]]:
        model, logs = _mlp(seed=3), []
        train_loop(
            model=model, loss_fn=mse, batches=loader_factory(_dataset(), batch_size=batch_size, seed=5),
            config=_config(total_steps=5, accum_steps=accum_steps, log_every=1), progress=False,
            log=lambda m, s: logs.append(m["train/grad_norm"]),
        )
        return model, logs

    (accumulated, norms_accumulated), (big, norms_big) = run(4, accum_steps=4), run(16, accum_steps=1)
    assert not torch.allclose(big[0].weight, _mlp(seed=3)[0].weight)
    # Adam hides a constant gradient scale in the weights; the pre-clip norms do not.
    assert norms_accumulated == pytest.approx(norms_big, rel=1e-5)
    for a, b in zip(accumulated.parameters(), big.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_step_randomness_depends_only_on_seed_step_and_micro_batch():
    seen, val_seeds = [], []

    def loss_fn(model, batch, step, generator):
        seen.append((step, generator.initial_seed(), torch.initial_seed(), torch.rand(()).item()))
        return F.mse_loss(model(batch[0]), batch[1]), {}

    def val_fn(model, step):
        val_seeds.append(torch.initial_seed())
        return {"draw": torch.rand(()).item()}

    model = _mlp()
    before = torch.get_rng_state()
    train_loop(
        model=model, loss_fn=loss_fn, batches=loader_factory(_dataset(), batch_size=8, seed=0),
        config=_config(total_steps=3, accum_steps=2, seed=4, val_every=1), log=lambda m, s: None,
        val_fn=val_fn, progress=False,
    )
    assert val_seeds == [derive_seed(4, STREAM_VALIDATION, step) for step in (1, 2, 3)]
    expected = [derive_seed(4, STREAM_TRAIN_STEP, step, micro) for step in range(3) for micro in range(2)]
    assert [g for _, g, _, _ in seen] == expected == [t for _, _, t, _ in seen]
    assert [s for s, _, _, _ in seen] == [0, 0, 1, 1, 2, 2] and len(set(expected)) == 6
    assert seen[0][3] == torch.rand((), generator=torch.Generator().manual_seed(expected[0])).item()
    assert torch.equal(torch.get_rng_state(), before)  # the loop leaves the global RNG alone


class _Crash(Exception):
    pass


def _plain_loader(dataset):
    """A DataLoader without its own generator: creating its iterator draws from global RNG."""
    order = BatchOrder(num_samples=len(dataset), batch_size=8, seed=3)
    return lambda start: DataLoader(dataset, batch_sampler=ResumableBatchSampler(order, start=start))


def _train_in_fresh_graph(
    directory, *, workers: int, crash_at: int | None = None, init_seed: int = 100, jitter: bool = False
):
    """Build model, data and loss from scratch (as a new process would) and train.

    A resumed run passes another `init_seed`: its initial weights must not matter.
    """

    def loss_fn(model, batch, step, generator):
        if step == crash_at:
            raise _Crash
        return _noisy_loss(model, batch, step, generator)

    def val_fn(model, step):
        return {"noise": torch.rand(()).item()}  # draws from the (seeded) global RNG

    return train_loop(
        model=_mlp(seed=init_seed, dropout=0.2), loss_fn=loss_fn,
        batches=_plain_loader(_JitterDataset(*_dataset().tensors)) if jitter else loader_factory(
            _dataset(), batch_size=8, seed=3, num_workers=workers
        ),
        config=_config(accum_steps=2, checkpoint_every=3, keep_checkpoints=2), log=lambda m, s: None,
        val_fn=val_fn, checkpoint_dir=directory, progress=False, extra={"scale_factor": 0.5},
    )


# Worker seeds change on resume, so only a main-process dataset may draw from global RNG.
@pytest.mark.parametrize(("workers", "jitter"), [(0, True), (2, False)], ids=["main-process", "2-workers"])
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, workers, jitter):
    straight = _train_in_fresh_graph(tmp_path / "straight", workers=workers, jitter=jitter)
    with pytest.raises(_Crash):
        _train_in_fresh_graph(tmp_path / "resumed", workers=workers, crash_at=7, jitter=jitter)
    assert latest_checkpoint(tmp_path / "resumed").name == "step_00000006.pt"
    torch.manual_seed(999), np.random.seed(999), random.seed(999)  # pollute global state
    resumed = _train_in_fresh_graph(tmp_path / "resumed", workers=workers, init_seed=200, jitter=jitter)
    assert resumed.step == straight.step == 12
    assert resumed.val_metrics == straight.val_metrics and resumed.train_loss == straight.train_loss
    a, b = read_payload(straight.checkpoint), read_payload(resumed.checkpoint)
    for payload in (a, b):  # wall time: the one thing a resume may not reproduce
        assert payload["loop_state"].pop("train_seconds") > 0
    for key in ("model", "ema", "optimizer", "extra", "loop_state"):
        _assert_same(a[key], b[key])
    assert not torch.equal(a["model"]["0.weight"], a["ema"]["0.weight"])
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["step_00000009.pt", "step_00000012.pt"]


def test_a_resumed_run_reports_the_training_time_of_every_call(tmp_path):
    """train_seconds sums the calls (the cost a stage reports); wall_time_s is this call's."""
    config = _config(checkpoint_every=2)
    kwargs = dict(batches=loader_factory(_dataset(), batch_size=8, seed=0), log=lambda m, s: None, progress=False,
                  checkpoint_dir=tmp_path)

    def slow_then_crash(model, batch, step, generator):
        if step == 4:
            raise _Crash
        time.sleep(0.2)
        return _noisy_loss(model, batch, step, generator)

    with pytest.raises(_Crash):
        train_loop(model=_mlp(), loss_fn=slow_then_crash, config=config, **kwargs)
    resumed = train_loop(model=_mlp(), loss_fn=_noisy_loss, config=config, **kwargs)
    # four slept steps of 0.2 s before the crash's checkpoint at step 4
    assert resumed.train_seconds >= resumed.wall_time_s + 0.8


def test_a_finished_run_resumes_to_its_stored_result(tmp_path):
    first = _train_in_fresh_graph(tmp_path, workers=0)
    again = _train_in_fresh_graph(tmp_path, workers=0, crash_at=0, init_seed=200)
    assert again.step == 12 and again.train_loss == first.train_loss and again.val_metrics == first.val_metrics


def test_should_stop_ends_early_with_a_checkpoint_and_exceptions_propagate(tmp_path):
    kwargs = dict(
        loss_fn=_noisy_loss, batches=loader_factory(_dataset(), batch_size=8, seed=0),
        config=_config(val_every=2), log=lambda m, s: None, val_fn=lambda m, s: {"loss": 1.0}, progress=False,
    )
    result = train_loop(model=_mlp(), checkpoint_dir=tmp_path, should_stop=lambda s, m: s >= 4, **kwargs)
    assert result.stopped_early and result.step == 4 and result.checkpoint.name == "step_00000004.pt"

    def prune(step, metrics):
        raise _Crash

    with pytest.raises(_Crash):
        train_loop(model=_mlp(), should_stop=prune, **kwargs)


@pytest.mark.parametrize(("precision", "native", "dtype"), [
    (Precision.FP32, True, torch.float32), (Precision.BF16, False, torch.bfloat16),
    (Precision.AUTO, False, torch.float32), (Precision.AUTO, True, torch.bfloat16)])
def test_precision_sets_the_autocast_of_the_forward_pass(precision, native, dtype, monkeypatch):
    """bf16 autocasts; fp32 does not; auto follows whether the CPU computes bf16 natively."""
    from radiodiff import devices

    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    dtypes = set()

    def loss_fn(model, batch, step, generator):
        pred = model(batch[0])
        dtypes.add(pred.dtype)
        return F.mse_loss(pred.float(), batch[1]), {}

    train_loop(
        model=_mlp(), loss_fn=loss_fn, batches=loader_factory(_dataset(), batch_size=8, seed=0),
        config=_config(total_steps=3, precision=precision), log=lambda m, s: None, progress=False,
    )
    assert dtypes == {dtype}


def test_fp16_on_the_cpu_is_refused_in_one_line():
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        train_loop(model=_mlp(), loss_fn=lambda m, b, s, g: (m(b[0]).mean(), {}),
                   batches=loader_factory(_dataset(), batch_size=8, seed=0),
                   config=_config(precision=Precision.FP16), log=lambda m, s: None, progress=False)


def test_non_finite_loss_is_a_run_failure_naming_the_stage_and_step():
    def loss_fn(model, batch, step, generator):
        return model(batch[0]).mean() * (float("nan") if step == 2 else 1.0), {}

    with pytest.raises(RunFailure, match=r"train_vae: the training loss is nan at step 3: lower optim.lr"):
        train_loop(
            model=_mlp(), loss_fn=loss_fn, batches=loader_factory(_dataset(), batch_size=8, seed=0),
            config=_config(), log=lambda m, s: None, progress=False, name="train_vae",
        )


def test_out_of_memory_is_a_run_failure_with_the_batch_and_the_fix():
    """A (simulated) CUDA out-of-memory names the stage, the micro-batch and suggests accum_steps."""
    def loss_fn(model, batch, step, generator):
        if step == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return F.mse_loss(model(batch[0]), batch[1]), {}

    with pytest.raises(RunFailure) as failure:
        train_loop(model=_mlp(), loss_fn=loss_fn, batches=loader_factory(_dataset(), batch_size=8, seed=0),
                   config=_config(accum_steps=2), log=lambda m, s: None, progress=False, name="train_ldm")
    message = str(failure.value)
    assert message.startswith("train_ldm: CUDA out of memory at step 2 with micro-batches of 8 samples")
    assert "train.accum_steps to 4" in message and "micro-batches of 4" in message
    assert "\n" not in message


def test_out_of_memory_message_states_the_peak_memory():
    message = out_of_memory_message("train_vae", 7, 66, _config(accum_steps=8), 79.3)
    assert "peak 79.3 GiB allocated" in message and "accum_steps to 16" in message and "micro-batches of 33" in message


def test_compile_runs_the_forward_passes_through_torch_compile(monkeypatch):
    """The compiled module is what the loss sees; the plain one keeps the weights (EMA, state_dict)."""
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = _mlp()
    result = train_loop(model=model, loss_fn=lambda m, b, s, g: (F.mse_loss(m(b[0]), b[1]), {}),
                        batches=loader_factory(_dataset(), batch_size=8, seed=0),
                        config=_config(total_steps=3, compile=True), log=lambda m, s: None, progress=False)
    assert compiled == [model] and result.step == 3


def test_channels_last_trains_to_the_same_weights_as_contiguous():
    conv = lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 1, 1))  # noqa: E731
    data = TensorDataset(torch.randn(32, 2, 8, 8), torch.randn(32, 1, 8, 8))
    weights = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = conv()
        train_loop(model=model, loss_fn=lambda m, b, s, g: (F.mse_loss(m(b[0]), b[1]), {}),
                   batches=loader_factory(data, batch_size=8, seed=0),
                   config=_config(total_steps=3, channels_last=channels_last), log=lambda m, s: None, progress=False)
        weights.append(model[0].weight.detach().contiguous())
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_fused_ema_update_matches_the_per_tensor_formula():
    live, ema_source = _mlp(), _mlp()
    ema = EMA(ema_source, decay=0.9, start_step=2)
    expected = [p.detach().clone() for p in ema.ema_model.parameters()]
    ema.update(live, step=5)
    for before, after, param in zip(expected, ema.ema_model.parameters(), live.parameters()):
        assert torch.allclose(after, 0.9 * before + 0.1 * param.detach(), atol=1e-7)
    ema.update(live, step=1)  # before the start step: a copy
    assert all(torch.equal(a, p) for a, p in zip(ema.ema_model.parameters(), live.parameters()))


def test_invalid_loop_settings_are_user_errors():
    with pytest.raises(UserError):
        LoopConfig(total_steps=10, accum_steps=0)
    with pytest.raises(UserError):
        LoopConfig(total_steps=10, optim=OptimConfig(warmup_steps=10))
    with pytest.raises(UserError):
        OptimConfig(lr=1e-6, min_lr=1e-5)
