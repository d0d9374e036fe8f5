"""Prefect orchestration: the pipeline deployment runs on a real local server and a process
worker, in a copy of the project; plus the pure parts of pipelines/flows.py (retry rule, profile
as DVC `-S` overrides, stage commands)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipelines.flows import (
    StageFailed, _retry_transient, is_transient, pipeline_stages, stage_command,
)
from tests.conftest import REPO_ROOT
from tests.test_pipeline import _copy_project, _dvc

BIN = Path(sys.executable).parent
FAILED = "ERROR: failed to reproduce 'prepare': failed to run: python -m pipelines.prepare, exited with {}"


@pytest.mark.parametrize(("returncode", "stderr", "transient"), [
    (255, FAILED.format(2), False),  # the stage's UserError: retrying repeats the mistake
    (255, FAILED.format(1), True),  # an uncaught exception (e.g. CUDA out of memory)
    (255, FAILED.format(-9), True),  # the stage process was killed
    (-15, "", True),  # dvc itself was killed
    (255, "ERROR: Stage 'nosuch' not found inside 'dvc.yaml' file", False),
    (255, "ERROR: Invalid `--set-param` value: Could not override 'a.b'.", False),
    (255, "ERROR: Unable to acquire lock. Most likely another DVC process is running", True),
])
def test_only_crashes_and_kills_are_retried(returncode, stderr, transient):
    assert is_transient(returncode, stderr) is transient


def test_the_task_retry_condition_reads_the_failed_state():
    import pickle

    from prefect.states import Failed

    crashed = StageFailed("prepare", 255, FAILED.format(-9))
    assert _retry_transient(None, None, Failed(data=crashed))
    assert not _retry_transient(None, None, Failed(data=StageFailed("prepare", 255, FAILED.format(2))))
    assert not _retry_transient(None, None, Failed(data=ValueError("unknown profile")))
    assert pickle.loads(pickle.dumps(crashed)).transient  # survives result persistence


@pytest.mark.parametrize("profile", ["study", "paper"])
def test_a_profile_as_dvc_overrides_turns_params_into_the_profile(tmp_path, profile, capsys):
    """`radiodiff profile NAME`, split on spaces as `$(...)` splits it, is what DVC's own `-S`
    needs to turn params.yaml into the profile."""
    from dvc.utils.hydra import apply_overrides
    from dvc.utils.serialize import load_yaml  # YAML 1.2, as DVC reads params (PyYAML reads 1e-06 as text)

    from radiodiff.cli import main

    params = tmp_path / "params.yaml"
    shutil.copy2(REPO_ROOT / "params.yaml", params)
    shutil.copytree(REPO_ROOT / "profiles", tmp_path / "profiles")
    assert main(["profile", profile, "--params", str(params)]) == 0
    words = capsys.readouterr().out.split()  # as the shell's word splitting of `$(...)` does
    assert words[0::2] == ["-S"] * (len(words) // 2)
    sets = words[1::2]
    if profile == "paper":
        assert any(s.startswith("~") for s in sets) and any(s.startswith("++") for s in sets)
    apply_overrides(params, sets)  # DVC's own `-S` implementation
    target = load_yaml(REPO_ROOT / "profiles" / f"{profile}.yaml")
    assert json.loads(json.dumps(load_yaml(params))) == json.loads(json.dumps(target))


def test_profile_refuses_an_unknown_name_and_default_is_params_itself(capsys):
    from radiodiff.cli import main

    assert main(["profile", "nope", "--params", str(REPO_ROOT / "params.yaml")]) == 2
    assert "unknown profile 'nope'; known: default, paper, study" in capsys.readouterr().err
    assert main(["profile", "default", "--params", str(REPO_ROOT / "params.yaml")]) == 0
    assert capsys.readouterr().out.strip() == ""


def test_override_values_are_one_shell_word_and_keep_their_type():
    from radiodiff.errors import UserError
    from radiodiff.profiles import hydra_value

    assert hydra_value([1, 2, 4]) == "[1,2,4]" and hydra_value({"a": 1.5, "b": None}) == "{a:1.5,b:null}"
    assert hydra_value("kc") == "kc" and hydra_value("true") == "'true'" and hydra_value("1e-6") == "'1e-6'"
    with pytest.raises(UserError, match="not one plain word"):
        hydra_value("two words", "x.y")


def test_stage_commands_keep_dvc_in_charge():
    assert stage_command(["prepare"], sets=[], experiment=None)[-2:] == ["repro", "prepare"]
    command = stage_command(["prepare", "build_bank"], sets=["a.b=1"], experiment="run-x", single_item=True)
    assert command[3:] == ["exp", "run", "--temp", "-n", "run-x", "--single-item", "-S", "a.b=1", "prepare",
                           "build_bank"]  # one experiment for the whole run
    with pytest.raises(ValueError, match="one stage per task"):
        stage_command(["prepare", "build_bank"], sets=[], experiment=None)
    assert pipeline_stages(REPO_ROOT / "dvc.yaml")[0] == "prepare"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post_json(url: str, payload: dict) -> object:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _prefect(env: dict, cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
    return done


@pytest.fixture
def prefect_server(tmp_path):
    """A Prefect server on a free loopback port with its home in `tmp_path`; yields the client
    environment; always stopped (its whole process group) at the end."""
    port = _free_port()
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_SERVER_UI_ENABLED="false",
               PREFECT_LOGGING_LEVEL="WARNING", PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if _get(f"{env['PREFECT_API_URL']}/health") is True:
                    break
            except OSError:
                assert time.monotonic() < deadline, "the Prefect server did not answer within 60 s"
                time.sleep(0.5)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.slow
def test_deployment_runs_a_stage_on_a_process_worker(tmp_path, prefect_server):
    from mlflow import MlflowClient

    project = tmp_path / "project"
    _copy_project(project)
    shutil.copy2(REPO_ROOT / "prefect.yaml", project / "prefect.yaml")
    assert _dvc(project, "init", "--no-scm", "-q").returncode == 0
    env = dict(prefect_server, DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site"), MPLCONFIGDIR=str(tmp_path / "mpl"),
               RADIODIFF_PROJECT_DIR=str(project))
    for name in ("MLFLOW_TRACKING_URI", "RADIODIFF_ARTIFACT_ROOT"):
        env.pop(name, None)  # the stages' own store, inside the copy

    _prefect(env, project, "work-pool", "create", "gpu-workers", "--type", "process")
    _prefect(env, project, "--no-prompt", "deploy", "--all")  # every deployment of prefect.yaml must load
    cpu = {**yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["definitions"]["gpu_pool"]["job_variables"]["env"],
           "CUDA_VISIBLE_DEVICES": "", "RADIODIFF_DEVICE": "cpu"}
    started = _prefect(env, project, "deployment", "run", "radiodiff-pipeline/full-pipeline",
                       "--param", 'stages=["prepare"]', "--job-variable", f"env={json.dumps(cpu)}")
    flow_run_id = next(line.split()[-1] for line in started.stdout.splitlines() if "UUID" in line)
    _prefect(env, tmp_path, "worker", "start", "--pool", "gpu-workers", "--run-once", timeout=150)

    flow_run = _get(f"{env['PREFECT_API_URL']}/flow_runs/{flow_run_id}")
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    # One tree: the stage's own flow run (in its dvc repro process) is a child of the stage task.
    runs = _post_json(f"{env['PREFECT_API_URL']}/flow_runs/filter", {})
    (stage_run,) = [run for run in runs if run["id"] != flow_run_id]
    assert stage_run["state"]["type"] == "COMPLETED" and stage_run["parent_task_run_id"]
    parent_task = _get(f"{env['PREFECT_API_URL']}/task_runs/{stage_run['parent_task_run_id']}")
    assert parent_task["flow_run_id"] == flow_run_id and parent_task["name"] == "prepare"
    assert (project / "data" / "prepared" / "index.parquet").is_file()
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"prepare"}
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("radiodiff").experiment_id])
    assert [(run.data.tags["stage"], run.data.tags.get("prefect_flow_run_id")) for run in runs] == [
        ("prepare", flow_run_id)]


def test_the_tune_deployment_resolves_its_profile_or_refuses_it(monkeypatch):
    from pipelines.flows import tune_deployment_flow

    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(ValueError, match="unknown profile 'nope'; known: default, paper, study"):
        tune_deployment_flow.fn(profile="nope")
