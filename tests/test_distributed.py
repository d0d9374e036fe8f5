"""Data-parallel training: batch sharding, two gloo processes under torchrun, the stage launcher."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import torch
import yaml

from radiodiff.errors import UserError
from radiodiff.training import distributed
from radiodiff.training.distributed import Ranks, shard_batch, shard_bounds, torchrun_command
from tests._ddp_worker import BATCH, toy_model, train_toy
from tests.conftest import REPO_ROOT

# --- sharding -----------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("total", [8, 9, 66, 67])
def test_rank_slices_are_disjoint_and_cover_the_batch(total, world):
    bounds = [shard_bounds(total, Ranks(rank=r, world_size=world)) for r in range(world)]
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(total))  # in order, so also disjoint
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_shard_batch_splits_nested_tensors_and_shares_sum_to_one():
    batch = {"x": torch.arange(21).view(7, 3), "pair": (torch.arange(7), [torch.ones(7, 2)]),
             "scale": torch.tensor(2.0), "name": "toy"}
    shards = [shard_batch(batch, Ranks(rank=r, world_size=2)) for r in range(2)]
    assert [len(shard["x"]) for shard, _ in shards] == [3, 4]
    assert sum(share for _, share in shards) == pytest.approx(1.0)
    assert torch.equal(torch.cat([shard["x"] for shard, _ in shards]), batch["x"])
    assert torch.equal(torch.cat([shard["pair"][0] for shard, _ in shards]), batch["pair"][0])
    assert all(shard["pair"][1][0].shape == (len(shard["x"]), 2) for shard, _ in shards)
    assert all(shard["scale"] is batch["scale"] and shard["name"] == "toy" for shard, _ in shards)
    alone, share = shard_batch(batch, Ranks())
    assert alone is batch and share == 1.0


def test_a_batch_smaller_than_the_world_or_of_mixed_sizes_is_refused():
    with pytest.raises(UserError, match="cannot be split over 4 devices"):
        shard_batch(torch.zeros(3, 2), Ranks(rank=0, world_size=4))
    with pytest.raises(ValueError, match="leading sizes"):
        shard_batch([torch.zeros(4), torch.zeros(5)], Ranks(rank=0, world_size=2))


def test_training_refuses_a_device_count_the_process_group_does_not_have(tmp_path):
    with pytest.raises(UserError, match="configured for 2 device"):
        train_toy(toy_model(), devices=2, checkpoint_dir=None, log=lambda metrics, step: None)


# --- two gloo processes -------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The toy training run by 2 torchrun processes: each rank's saved outcome, and the folder.
    Its tests are slow: ~10-20 s, mostly three interpreters importing torch."""
    out = tmp_path_factory.mktemp("ddp")
    command = torchrun_command("tests._ddp_worker", [str(out)], devices=2)
    done = subprocess.run(command, cwd=REPO_ROOT, env=_one_thread_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)], out


@pytest.mark.slow
def test_both_ranks_end_with_identical_weights_that_moved(two_ranks):
    (rank0, rank1), _ = two_ranks
    assert rank0["world_size"] == rank1["world_size"] == 2
    initial = toy_model().state_dict()
    for name, weight in rank0["weights"].items():
        assert torch.equal(weight, rank1["weights"][name]), name
        assert torch.equal(rank0["ema"][name], rank1["ema"][name]), name
        assert not torch.allclose(weight, initial[name]), name


@pytest.mark.slow
def test_two_ranks_train_as_one_process_on_the_whole_batch(two_ranks):
    # Unequal slices (4 + 3 of 7) weighted by their share give the one-process gradient.
    assert BATCH % 2 == 1
    (rank0, _), _ = two_ranks
    model = toy_model()
    single = train_toy(model, devices=1, checkpoint_dir=None, log=lambda metrics, step: None)
    for name, weight in model.state_dict().items():
        torch.testing.assert_close(rank0["weights"][name], weight, rtol=1e-5, atol=1e-6)
    assert rank0["train_loss"] == pytest.approx(single.train_loss, rel=1e-5)
    assert rank0["val_metrics"]["mse"] == pytest.approx(single.val_metrics["mse"], rel=1e-5)


@pytest.mark.slow
def test_only_rank_zero_logs_and_writes_checkpoints_but_all_share_its_results(two_ranks):
    (rank0, rank1), out = two_ranks
    assert rank1["logged"] == []
    logged_steps = sorted({step for step, _ in rank0["logged"]})
    assert logged_steps == [1, 2, 3, 4]
    assert any("val/mse" in metrics for _, metrics in rank0["logged"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000004.pt"]
    assert rank0["checkpoint"] == rank1["checkpoint"] == str(out / "checkpoints" / "step_00000004.pt")
    assert rank0["val_metrics"] == rank1["val_metrics"]
    assert rank0["train_loss"] == rank1["train_loss"]


@pytest.mark.slow
def test_rank_zero_clock_decides_the_parity_codas_of_every_rank(two_ranks):
    # rank 0: 1 s a call, 4 step/s, 2.5 s to reach: 1.5 s short -> 8 steps, the floor of 10; then 0.5 s -> 10
    (rank0, rank1), _ = two_ranks
    assert rank0["parity_coda_steps"] == rank1["parity_coda_steps"] == 20
    assert rank0["parity_saved"] == [10, 20] and rank1["parity_saved"] == []  # rank 0 alone stores the plan
    for name, weight in rank0["parity_weights"].items():
        assert torch.equal(weight, rank1["parity_weights"][name]), name


@pytest.mark.slow
def test_rank_zero_decides_an_early_stop_and_a_resumed_run_matches_an_uninterrupted_one(two_ranks):
    (rank0, rank1), _ = two_ranks
    assert rank0["stop_calls"] == [2] and rank1["stop_calls"] == []
    assert rank0["interrupted_at"] == rank1["interrupted_at"] == 2
    for rank in (rank0, rank1):
        for name, weight in rank0["weights"].items():
            assert torch.equal(rank["resumed"][name], weight), name


def _one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


# --- the stage launcher -------------------------------------------------------------


STAGES = {
    "pipelines.train_vae": ("vae", "train"),
    "pipelines.train_ldm": ("ldm", "train"),
    "pipelines.train_baseline": ("baseline", "train"),
    "pipelines.tune_tail": ("flux", "tail_tune", "train"),
    "pipelines.tune_few_step": ("flux", "tail_tune", "train"),
}


@pytest.mark.parametrize("module", sorted(STAGES))
def test_a_stage_on_two_devices_relaunches_itself_under_torchrun(module, tmp_path, monkeypatch):
    import importlib

    params = _tiny_params_with_devices(tmp_path, STAGES[module], devices=2)
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    calls, real_run = [], subprocess.run

    def fake_run(command, **kwargs):
        if command[1:3] != ["-m", "torch.distributed.run"]:
            return real_run(command, **kwargs)  # e.g. the platform module's own queries
        calls.append((command, kwargs))
        return subprocess.CompletedProcess(command, 7)

    monkeypatch.setattr(distributed.subprocess, "run", fake_run)
    code = importlib.import_module(module).main(["--params", str(params)])
    assert code == 7  # the torchrun run's exit code
    [(command, kwargs)] = calls
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", module, "--params", str(params)]
    assert "shell" not in kwargs and int(kwargs["env"]["OMP_NUM_THREADS"]) >= 1


def test_under_torchrun_the_stage_runs_instead_of_relaunching(tmp_path, monkeypatch):
    # A one-process torchrun world: rank 0 runs the stage body, never torchrun again.
    from pipelines._stage import Launch, stage_main

    params = _tiny_params_with_devices(tmp_path, ("vae", "train"), devices=1)
    monkeypatch.setenv("LOCAL_RANK", "0")
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(distributed, "launch", lambda *a, **k: pytest.fail("relaunched"))
    seen = []
    launch = Launch(module="pipelines.train_vae", section="vae.train", loop=lambda p: p.vae.train)
    body = lambda p: seen.append((distributed.current(), distributed.is_main()))  # noqa: E731
    assert stage_main(["--params", str(params)], "test", body, launch) == 0
    assert seen == [(Ranks(rank=0, world_size=1, local_rank=0), True)]
    assert not torch.distributed.is_initialized()  # torn down


def test_every_rank_runs_the_same_stage_body_and_only_rank_zero_tracks_and_writes(dataset, tmp_path, monkeypatch,
                                                                                  mlflow_store):
    # The stage body of a rank other than 0: the same training call, no flow run, no MLflow
    # run, no model file; rank 0 runs the same function as a Prefect flow and writes.
    import mlflow

    from pipelines._stage import rank_flow
    from pipelines.train_vae import train_vae_flow
    from radiodiff.config import VAEConfig
    from tests.conftest import DATA, LOOP

    cfg = VAEConfig(base_channels=8, channel_mults=(1, 2, 4), data=DATA, train=LOOP)
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    body = rank_flow(train_vae_flow)
    assert body is train_vae_flow.fn
    worker = body(cfg, dataset_dir=str(dataset / "data"), model_path=str(tmp_path / "worker.pt"),
                  work_dir=str(tmp_path / "work"))
    assert not (tmp_path / "worker.pt").exists() and "test_nmse" in worker
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    assert mlflow.get_experiment_by_name("radiodiff") is None  # no store touched at all
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    assert rank_flow(train_vae_flow) is train_vae_flow


def test_torchrun_command_is_an_argument_list():
    assert torchrun_command("pipelines.train_ldm", ["--params", "my params.yaml"], devices=8, python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8",
        "-m", "pipelines.train_ldm", "--params", "my params.yaml"]
    with pytest.raises(ValueError):
        torchrun_command("pipelines.train_ldm", [], devices=0)


def _tiny_params_with_devices(tmp_path, keys: tuple[str, ...], *, devices: int):
    raw = yaml.safe_load((REPO_ROOT / "tests" / "tiny_params.yaml").read_text())
    section = raw
    for key in keys:
        section = section.setdefault(key, {})
    section["devices"] = devices
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

