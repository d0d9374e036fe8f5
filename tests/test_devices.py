"""The device resolver: every spelling, the environment override, torchrun ranks, refusals as
one line; the preflight GPU count; precision; and the retry rule of deterministic failures."""

from __future__ import annotations

import pytest
import torch

from radiodiff.devices import (
    DEVICE_ENV, check_device_count, check_device_spec, device_name, requested_device, resolve_device,
    resolve_precision, to_device,
)
from radiodiff.errors import UserError
from radiodiff.options import Precision


@pytest.mark.parametrize(("spec", "count", "expected"), [
    ("auto", 0, "cpu"), ("auto", 2, "cuda:0"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda:0"),
    ("cuda:1", 2, "cuda:1"), ("cuda:0", 1, "cuda:0"),
])
def test_every_form_resolves(spec, count, expected):
    assert resolve_device(spec, environ={}, cuda_count=count) == torch.device(expected)


def test_environment_overrides_params_and_a_flag_overrides_both():
    assert resolve_device("cuda", environ={DEVICE_ENV: "cpu"}, cuda_count=1) == torch.device("cpu")
    assert resolve_device("cpu", "cuda:1", environ={DEVICE_ENV: "cpu"}, cuda_count=2) == torch.device("cuda:1")
    assert requested_device("auto", None, {DEVICE_ENV: "cuda"}) == ("cuda", DEVICE_ENV)
    assert requested_device("auto", None, {DEVICE_ENV: ""}) == ("auto", "params")


def test_under_torchrun_each_rank_takes_its_own_gpu():
    ranks = {"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "4"}
    assert resolve_device("auto", environ=ranks, cuda_count=4) == torch.device("cuda:3")
    assert resolve_device("cuda", environ=ranks, cuda_count=4) == torch.device("cuda:3")
    assert resolve_device("auto", environ=ranks, cuda_count=0) == torch.device("cpu")  # gloo processes
    with pytest.raises(UserError, match="names one GPU"):
        resolve_device("cuda:0", environ=ranks, cuda_count=4)


@pytest.mark.parametrize(("spec", "count", "message"), [
    ("cuda", 0, "params asks for cuda, but no CUDA device is visible"),
    ("cuda:2", 2, "params asks for cuda:2, but 2 CUDA devices are visible"),
    ("cuda:1", 1, "params asks for cuda:1, but 1 CUDA device is visible"),
])
def test_a_missing_gpu_is_one_line(spec, count, message):
    with pytest.raises(UserError) as error:
        resolve_device(spec, environ={}, cuda_count=count)
    assert str(error.value) == message


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "CUDA", "cuda:01", "mps", "", "cpu "])
def test_bad_spellings_are_refused(spec):
    with pytest.raises(UserError, match="is not a device; use auto, cpu, cuda or cuda:N"):
        check_device_spec(spec)
    with pytest.raises(UserError, match=DEVICE_ENV):
        resolve_device("auto", environ={DEVICE_ENV: spec or "x"}, cuda_count=0)


def test_params_refuse_a_bad_device_in_one_line(tmp_path):
    from radiodiff.config import load_params

    path = tmp_path / "params.yaml"
    path.write_text("vae:\n  train: {total_steps: 10, device: gpu}\n")
    with pytest.raises(UserError, match="train.device: 'gpu' is not a device"):
        load_params(path)
    path.write_text("flux: {device: 'cuda:x'}\n")
    with pytest.raises(UserError, match="flux.device"):
        load_params(path)


def test_more_devices_than_gpus_is_refused_before_torchrun():
    with pytest.raises(UserError) as error:
        check_device_count(8, "auto", where="ldm.train", environ={}, cuda_count=1)
    assert str(error.value) == "train.devices is 8 but 1 CUDA device is visible (ldm.train)"
    with pytest.raises(UserError, match="names one GPU"):
        check_device_count(2, "cuda:0", where="vae.train", environ={}, cuda_count=2)
    check_device_count(2, "auto", environ={}, cuda_count=2)
    check_device_count(8, "auto", environ={}, cuda_count=0)  # CPU processes (gloo): any number
    check_device_count(8, "cpu", environ={}, cuda_count=1)
    with pytest.raises(UserError, match="is 4 but 0 CUDA devices are visible"):
        check_device_count(4, "cuda", environ={}, cuda_count=0)


def test_a_stage_refuses_too_many_gpus_before_starting_torchrun(monkeypatch, tmp_path, capsys):
    """The stage entry point prints the one line and exits 2; torchrun never starts."""
    import pipelines.train_vae as stage
    from radiodiff.training import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed, "launch", lambda *a, **k: pytest.fail("torchrun started"))
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    params = tmp_path / "params.yaml"
    params.write_text("vae:\n  train: {total_steps: 10, devices: 8}\n")
    assert stage.main(["--params", str(params)]) == 2
    assert capsys.readouterr().err.strip() == "error: train.devices is 8 but 1 CUDA device is visible (vae.train)"


def test_auto_precision_follows_native_bf16_and_fp16_needs_cuda(monkeypatch):
    from radiodiff import devices

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision(Precision.AUTO, cpu) is Precision.FP32
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision(Precision.AUTO, cpu) is Precision.BF16
    assert resolve_precision(Precision.BF16, cpu) is Precision.BF16
    assert resolve_precision(Precision.FP32, cpu) is Precision.FP32
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        resolve_precision(Precision.FP16, cpu)


def test_to_device_moves_nested_tensors_and_leaves_the_rest():
    batch = {"gain": torch.ones(2, 1), "parts": [torch.zeros(1), 3], "name": "x"}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["gain"].device.type == "cpu" and moved["parts"][1] == 3 and moved["name"] == "x"


def test_device_name_says_cpu_and_its_processor():
    assert device_name(torch.device("cpu")).startswith("cpu (")


@pytest.mark.parametrize(("tail", "transient"), [
    ("ERROR: failed to run: python -m pipelines.train_ldm, exited with 2", False),  # UserError
    ("ERROR: failed to run: python -m pipelines.train_ldm, exited with 3", False),  # OOM, NaN loss
    ("ERROR: failed to run: python -m pipelines.train_ldm, exited with 1", True),   # a crash
    ("ERROR: failed to run: python -m pipelines.train_ldm, exited with -9", True),  # a signal
])
def test_prefect_retries_crashes_and_signals_only(tail, transient):
    from pipelines.flows import is_transient

    assert is_transient(1, tail) is transient


def test_the_gpu_pool_does_not_pin_every_run_to_gpu_0():
    """A flow run inherits its worker's CUDA_VISIBLE_DEVICES (one worker per GPU)."""
    import yaml

    from conftest import REPO_ROOT

    env = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["definitions"]["gpu_pool"]["job_variables"]["env"]
    assert "CUDA_VISIBLE_DEVICES" not in env and env["RADIODIFF_DEVICE"] == "cuda"


def test_stages_report_the_device_they_trained_on(vae_file, ldm_file):
    assert vae_file[1].metrics["device"].startswith("cpu (")
    assert ldm_file[2].metrics["device"].startswith("cpu (")
    assert ldm_file[2].model.device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_every_stage_asks_the_resolver_before_building_a_network(dataset, vae_file, ldm_file, monkeypatch):
    """With RADIODIFF_DEVICE=cuda on a CPU machine each entry refuses in one line: the stages
    place their networks where the resolver says, not on a hard-wired CPU."""
    from conftest import CONDITION, DATA, LOOP
    from radiodiff.config import BaselineConfig, FluxConfig, VAEConfig
    from radiodiff.serve import FluxPredictor
    from radiodiff.stages.baseline import train_baseline
    from radiodiff.stages.ldm import train_ldm
    from radiodiff.stages.vae import train_vae

    monkeypatch.setenv(DEVICE_ENV, "cuda")
    common = {"dataset_dir": dataset / "data", "work_dir": dataset / "never", "log": lambda m, s: None,
              "progress": False}
    runs = {
        "train_vae": lambda: train_vae(VAEConfig(base_channels=8, data=DATA, train=LOOP), **common),
        "train_ldm": lambda: train_ldm(ldm_file[1], CONDITION, vae_path=vae_file[0], **common),
        "train_baseline": lambda: train_baseline(BaselineConfig(base_channels=8, data=DATA, train=LOOP), CONDITION,
                                                 **common),
        "predict": lambda: FluxPredictor.from_files(ldm_path=ldm_file[0], vae_path=vae_file[0], resolution=32,
                                                    flux=FluxConfig(t_mids=(30,), t_mid=30, prefix_steps=2)),
    }
    for name, run in runs.items():
        with pytest.raises(UserError, match=f"{DEVICE_ENV} asks for cuda, but no CUDA device is visible"):
            run()
    assert not (dataset / "never").exists()
