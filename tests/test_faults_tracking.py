"""Crashes mid-stage and their bookkeeping: a SIGKILLed or SIGTERMed stage leaves no MLflow run
RUNNING, and a killed `dvc repro` leaves no output that DVC takes as valid. The kills hit
driver subprocesses (tests/fault_scripts/) and real DVC runs at points chosen by a seeded RNG.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.fault_scripts.harness import Driver, script
from tests.test_pipeline import _copy_project, _dvc

pytestmark = pytest.mark.slow
KILLED = -signal.SIGKILL


# --- MLflow: a killed stage leaves no RUNNING run behind ---------------------------------------

def test_a_sigkilled_stage_run_is_failed_at_the_next_start_and_sigterm_fails_its_own_run(mlflow_store, tmp_path):
    import mlflow

    from radiodiff import tracking
    from radiodiff.tracking.crashes import owner_tags

    tracking.configure()  # make the store first: two processes creating one sqlite schema collide
    killed, alive = (Driver(script("tracked.py", "fault_demo"), log_dir=tmp_path) for _ in range(2))
    killed_id, alive_id = (d.wait_for_line(lambda line: line.startswith("run ")).split()[1] for d in (killed, alive))
    assert killed.kill() == KILLED
    client = mlflow.MlflowClient()
    assert client.get_run(killed_id).info.status == "RUNNING"  # a SIGKILLed process can mark nothing

    dead = {**owner_tags(), "pid": str(killed.proc.pid)}
    decoys = {  # runs the next start must leave alone, and a pid that lives on in another process
        "other stage": ({**dead, "stage": "other_stage"}, "RUNNING"),
        "other host": ({**dead, "stage": "fault_demo", "host": "another-machine"}, "RUNNING"),
        "reused pid": ({**owner_tags(), "stage": "fault_demo", "pid_started": "1"}, "FAILED"),
    }
    experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    decoy_ids = {name: client.create_run(experiment, tags=tags).info.run_id for name, (tags, _) in decoys.items()}
    with tracking.stage_run("fault_demo", {"work_seconds": 0}):
        pass

    failed = client.get_run(killed_id)
    assert failed.info.status == "FAILED" and "killed" in failed.data.tags["failure_reason"]
    assert client.get_run(alive_id).info.status == "RUNNING"  # its process still works
    assert {name: client.get_run(run_id).info.status for name, run_id in decoy_ids.items()} == {
        name: status for name, (_, status) in decoys.items()}

    assert alive.kill(signal.SIGTERM) == 128 + signal.SIGTERM  # what a scheduler sends first
    ended = client.get_run(alive_id)
    assert ended.info.status == "FAILED" and "failure_reason" not in ended.data.tags  # it ended its own run


class _Cancelled(BaseException):
    """Stands in for Prefect's TerminationSignal, raised by the handler a flow installs."""


def test_sigterm_inside_a_stage_run_defers_to_an_earlier_handler_and_restores_it(mlflow_store):
    import mlflow

    from radiodiff import tracking

    def earlier(signum, frame):
        raise _Cancelled

    previous = signal.signal(signal.SIGTERM, earlier)
    try:
        with pytest.raises(_Cancelled), tracking.stage_run("fault_demo", {"work_seconds": 0}) as run:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # to this thread, not another
            time.sleep(10)  # the handler's exception interrupts it
        assert signal.getsignal(signal.SIGTERM) is earlier
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert mlflow.MlflowClient().get_run(run.run_id).info.status == "FAILED"


# --- DVC: a killed `dvc repro prepare` leaves nothing DVC takes as valid ------------------------

def _dvc_env(cwd: Path) -> dict:
    """The environment of `test_pipeline._dvc`, for a DVC run this test kills."""
    env = dict(os.environ, PYTHONPATH=str(cwd), DVC_NO_ANALYTICS="1", PREFECT_HOME=str(cwd / ".prefect"),
               DVC_SITE_CACHE_DIR=str(cwd / ".dvc-site"), MPLCONFIGDIR=str(cwd / ".mpl"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _locked_stages(project: Path) -> set[str]:
    lock = project / "dvc.lock"
    return set(yaml.safe_load(lock.read_text())["stages"]) if lock.is_file() else set()


def test_killed_dvc_repro_prepare_is_not_taken_as_done_and_its_mlflow_run_ends_failed(tmp_path):
    import mlflow

    project = tmp_path / "project"
    project.mkdir()
    _copy_project(project)
    assert _dvc(project, "init", "--no-scm", "-q").returncode == 0
    repro = [str(Path(sys.executable).parent / "dvc"), "repro", "prepare"]
    shards = random.Random(41).randint(1, 3)
    points = {  # SIGKILL the whole process group (dvc, the stage, Prefect's server), as a scheduler does
        "mid-simulation": lambda: len(list(project.glob("data/cache/prepare/*/*.npz"))) >= shards,
        "dataset written, not yet committed": lambda: (project / "data/prepared/index.parquet").is_file(),
    }
    for name, condition in points.items():
        run = Driver(repro, cwd=project, env=_dvc_env(project), log_dir=tmp_path)
        run.wait_until(condition, timeout=300)
        assert run.kill() == KILLED, name
        assert "prepare" not in _locked_stages(project), name
        status = _dvc(project, "status", "prepare")
        assert status.returncode == 0 and "changed" in status.stdout, (name, status.stdout)

    done = _dvc(project, "repro", "prepare")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prepare" in _locked_stages(project)
    assert "up to date" in _dvc(project, "status", "prepare").stdout
    assert json.loads((project / "metrics" / "prepare.json").read_text())["maps_reused"] == 5

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["radiodiff"], output_format="list")
    assert sorted(run.info.status for run in runs) == ["FAILED", "FAILED", "FINISHED"]
    assert all("failure_reason" in run.data.tags for run in runs if run.info.status == "FAILED")
