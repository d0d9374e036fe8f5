"""Optuna tuning: `radiodiff tune` on the tiny profile resumes its study and nests its MLflow
runs, a pruner that prunes stops trials, bad search spaces fail in one line, and the best params
come back through their files, through `dvc exp run -S`, and through the DVC remote."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml

from radiodiff.cli import main
from radiodiff.config import load_params
from radiodiff.errors import UserError
from radiodiff.tuning.best import read_best, set_param_args, write_best
from radiodiff.tune_config import ParamKind, ParamSpec
from radiodiff.tuning.objective import TrialInputs
from radiodiff.tuning.overrides import apply_overrides, lookup
from radiodiff.tuning.space import check_space, trial_config
from radiodiff.tuning.study import run_tuning
from radiodiff.tuning.tracker import COMPLETE, PRUNED
from tests.conftest import REPO_ROOT, run_git
from tests.test_pipeline import _copy_project, _dvc

TINY = REPO_ROOT / "tests" / "tiny_params.yaml"


def _tune(tmp_path: Path, dataset: Path, vae: Path, *extra: str, params: Path = TINY) -> int:
    return main(["tune", "--params", str(params), "--study-db", str(tmp_path / "tune" / "study.db"),
                 "--dataset", str(dataset / "data"), "--vae", str(vae), "--work-dir", str(tmp_path / "work"),
                 "--threads", "1", *extra])


@pytest.mark.slow
def test_tune_twice_gives_six_trials_under_one_parent_run(tmp_path, dataset, vae_file, mlflow_store, capsys):
    import mlflow

    for _ in range(2):
        assert _tune(tmp_path, dataset, vae_file[0], "--n-trials", "3") == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tune' / 'study.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 6 and set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(drawn)) == 6  # the resumed session does not replay the first one's draws

    runs = mlflow.search_runs(experiment_names=["radiodiff"], output_format="list")
    (parent,) = [r for r in runs if r.data.tags["stage"] == "tune"]
    trials = {int(r.data.tags["trial"]): r for r in runs if r.data.tags["stage"] == "tune_trial"}
    assert sorted(trials) == list(range(6))
    for trial in study.trials:
        run = trials[trial.number]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["state"] == {optuna.trial.TrialState.COMPLETE: COMPLETE}.get(trial.state, PRUNED)
        assert run.info.status == ("FINISHED" if trial.state == optuna.trial.TrialState.COMPLETE else "KILLED")
        assert {k: float(v) for k, v in run.data.params.items() if "lr" in k or "dropout" in k} == \
            {k: v for k, v in trial.params.items() if k != "ldm.unet.attention"}
        assert next(m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val/nmse")) == 2
    assert parent.info.status == "FINISHED"
    assert float(parent.data.tags["best.ldm.train.optim.lr"]) == study.best_params["ldm.train.optim.lr"]
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"optimization_history.png", "param_importances.png", "best"} <= artifacts

    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"best: trial {study.best_trial.number}, nmse ")
    assert out[-1].endswith(f"dvc exp run $(cat {tmp_path / 'tune' / 'best_params.args'})")
    assert [line.lstrip("* ").split()[1] for line in out[-8:-1]] == ["state", *["complete" if t.state.name == "COMPLETE"
                                                                   else "pruned" for t in study.trials]]
    assert read_best(tmp_path / "tune" / "best_params.yaml") == study.best_params


def test_tune_flow_runs_the_study_and_links_its_runs_to_the_flow_run(tmp_path, dataset, vae_file, mlflow_store,
                                                                     monkeypatch):
    import mlflow
    from prefect.logging import disable_run_logger

    from pipelines.tune import tune_flow

    monkeypatch.setenv("RADIODIFF_FLOW_RUN_ID", "flow-run-1")  # what pipelines/flows.py sets
    with disable_run_logger():
        summary = tune_flow.fn(str(TINY), n_trials=1, study_db=str(tmp_path / "t" / "study.db"),
                               dataset_dir=str(dataset / "data"), vae_path=str(vae_file[0]), work_dir=str(tmp_path / "w"))
    assert summary["trials"] == {COMPLETE: 1} and summary["best_trial"] == 0
    assert summary["best_files"] == [str(tmp_path / "t" / "best_params.yaml"), str(tmp_path / "t" / "best_params.args")]
    runs = mlflow.search_runs(experiment_names=["radiodiff"], output_format="list")
    assert sorted(r.data.tags["stage"] for r in runs) == ["tune", "tune_trial"]
    assert {r.data.tags["prefect_flow_run_id"] for r in runs} == {"flow-run-1"}


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


class _Recorder:
    """A tracker that remembers what each trial reported."""

    def __init__(self) -> None:
        self.finished: list[tuple[int, str]] = []
        self.logged: list[str] = []

    def study(self, name, uid, config):
        import contextlib

        recorder = self

        class Record:
            def __init__(self, number):
                self.number = number

            def log(self, metrics, step=None):
                recorder.logged += list(metrics)

            def finish(self, state, value):
                recorder.finished.append((self.number, state))

        class Run:
            @contextlib.contextmanager
            def trial(self, number, params):
                yield Record(number)

            def log_summary(self, **summary):
                recorder.summary = summary

        return contextlib.nullcontext(Run())


def test_a_pruner_that_prunes_stops_every_trial_at_its_first_validation(tmp_path, dataset, vae_file):
    params = load_params(TINY)
    recorder = _Recorder()
    result = run_tuning(params, n_trials=2, storage=tmp_path / "study.db", pruner=_AlwaysPrune(), tracker=recorder,
                        inputs=TrialInputs(dataset_dir=dataset / "data", vae_path=vae_file[0], work_dir=tmp_path / "w"))
    assert [(row.state, row.step) for row in result.rows] == [(PRUNED, params.tune.val_every)] * 2
    assert recorder.finished == [(0, PRUNED), (1, PRUNED)]
    assert "val/nmse" in recorder.logged and not any(key.startswith("test_") for key in recorder.logged)
    assert result.best is None and result.best_files == () and not (tmp_path / "best_params.yaml").exists()
    assert recorder.summary["counts"] == {COMPLETE: 0, PRUNED: 2, "failed": 0}
    assert list((tmp_path / "w").iterdir()) == []  # each trial's checkpoints went with it


def test_a_sampled_combination_the_config_refuses_fails_that_trial_not_the_study(tmp_path, dataset, vae_file):
    params = load_params(TINY)
    # Each bound passes against the profile's values; together min_lr > lr always.
    space = (ParamSpec(name="ldm.train.optim.lr", type=ParamKind.FLOAT, low=1.0e-5, high=1.1e-5),
             ParamSpec(name="ldm.train.optim.min_lr", type=ParamKind.FLOAT, low=3.0e-5, high=4.0e-5))
    recorder = _Recorder()
    result = run_tuning(replace(params, tune=replace(params.tune, params=space)), n_trials=2,
                        storage=tmp_path / "study.db", tracker=recorder,
                        inputs=TrialInputs(dataset_dir=dataset / "data", vae_path=vae_file[0], work_dir=tmp_path / "w"))
    assert [row.state for row in result.rows] == ["failed", "failed"] and result.best is None
    assert recorder.finished == [(0, "failed"), (1, "failed")]


@pytest.mark.parametrize("name, message", [
    ("ldm.train.optim.lrr", "unknown params key 'ldm.train.optim.lrr': ldm.train.optim has no 'lrr'"),
    ("vae.kl_weight", "'vae.kl_weight' is not read by train_ldm"),
    ("ldm.train.total_steps", "is set by the trial budget"),
])
def test_a_bad_search_space_is_one_error_line_and_exit_2(tmp_path, capsys, name, message):
    raw = yaml.safe_load(TINY.read_text())
    raw["tune"]["params"] = [{"name": name, "type": "float", "low": 1.0, "high": 2.0}]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    assert _tune(tmp_path, tmp_path, tmp_path / "vae.pt", params=params) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "tune" / "study.db").exists()


def test_a_bound_the_config_refuses_is_caught_before_any_trial():
    params = load_params(TINY)
    space = (ParamSpec(name="ldm.condition_dropout", type=ParamKind.FLOAT, low=0.0, high=1.0),)
    with pytest.raises(UserError, match=r"ldm.condition_dropout=1.0: condition_dropout must be in \[0, 1\)"):
        check_space(replace(params, tune=replace(params.tune, params=space)))


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/paper.yaml", "tests/tiny_params.yaml"])
def test_every_profile_has_a_tune_section_that_checks(profile):
    params = load_params(REPO_ROOT / profile)
    check_space(params)
    budgeted = trial_config(params, {})
    assert budgeted.ldm.train.total_steps == params.tune.trial_steps and not budgeted.ldm.train.val_on_ema


def test_best_params_files_round_trip_into_the_config(tmp_path):
    best = {"ldm.train.optim.lr": 1e-05, "ldm.condition_dropout": 0.123456789, "ldm.unet.attention": "window",
            "ldm.unet.num_res_blocks": 3}
    yaml_path, args_path = write_best(tmp_path, study="s", storage=tmp_path / "s.db", metric="nmse", trial=4,
                                      value=0.5, params=best)
    config = apply_overrides(load_params(TINY), read_best(yaml_path))
    assert {key: lookup(config, key) for key in best} == {**best, "ldm.unet.attention": config.ldm.unet.attention}
    assert config.ldm.unet.attention.value == "window"
    lines = args_path.read_text().splitlines()
    assert lines == set_param_args(best).splitlines() and all(line.startswith("-S ") for line in lines)
    assert lines[0] == "-S ++ldm.train.optim.lr=1e-05"


def test_a_value_the_args_file_cannot_hold_leaves_both_best_files_as_they_were(tmp_path):
    write_best(tmp_path, study="s", storage=tmp_path / "s.db", metric="nmse", trial=1, value=0.5,
               params={"ldm.condition_dropout": 0.1})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UserError, match="cannot be written"):
        write_best(tmp_path, study="s", storage=tmp_path / "s.db", metric="nmse", trial=2, value=0.4,
                   params={"ldm.condition_dropout": float("nan")})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_apply_overrides_checks_types_and_values():
    params = load_params(TINY)
    with pytest.raises(UserError, match="expected int"):
        apply_overrides(params, {"ldm.unet.base_channels": 8.5})
    with pytest.raises(UserError, match="condition_dropout"):
        apply_overrides(params, {"ldm.condition_dropout": 1.5})
    with pytest.raises(UserError, match="unknown params key 'ldm.unet.base_channels.x'"):
        apply_overrides(params, {"ldm.unet.base_channels.x": 1})
    assert apply_overrides(params, {"ldm.unet.base_channels": 12}).ldm.unet.base_channels == 12
    assert params.ldm.unet.base_channels == 8  # frozen: the original is untouched


def test_params_read_floats_the_way_dvc_writes_them(tmp_path):
    raw = TINY.read_text().replace("ldm:\n", "ldm:\n  condition_dropout: 1e-01\n", 1)
    (tmp_path / "params.yaml").write_text(raw)
    assert load_params(tmp_path / "params.yaml").ldm.condition_dropout == 0.1


@pytest.mark.slow
def test_dvc_exp_run_takes_the_best_params_file_and_the_remote_round_trips(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _copy_project(repo)  # the tiny profile as params.yaml: it leaves ldm.train.optim to the defaults
    run_git(repo, "init", "-q")
    assert _dvc(repo, "init", "-q").returncode == 0
    shutil.copy2(REPO_ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # the default remote
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-qm", "project")
    best = {"ldm.train.optim.lr": 2.5e-05, "ldm.condition_dropout": 0.3125, "ldm.unet.attention": "window"}
    yaml_path, args_path = write_best(repo / "tune", study="s", storage=repo / "tune" / "s.db", metric="nmse",
                                      trial=0, value=0.5, params=best)
    # `dvc exp run $(cat tune/best_params.args)`, queued rather than run: DVC writes the params into
    # the experiment's commit, which the stages would then load.
    queued = _dvc(repo, "exp", "run", "--queue", *args_path.read_text().split())
    assert queued.returncode == 0, queued.stderr[-2000:]
    shown = json.loads(_dvc(repo, "exp", "show", "--json").stdout)
    (rev,) = [r["rev"] for e in shown for x in (e.get("experiments") or []) for r in x["revs"]]
    written = subprocess.run(["git", "show", f"{rev}:params.yaml"], cwd=repo, capture_output=True, text=True, check=True)
    (tmp_path / "params.yaml").write_text(written.stdout)
    config = load_params(tmp_path / "params.yaml")
    assert {key: lookup(config, key) for key in best} == {**best, "ldm.unet.attention": config.ldm.unet.attention}
    assert config.ldm.unet.attention.value == "window"

    # The default remote (../radiodiff-dvc-remote beside the work tree) carries data to a clone.
    assert _dvc(repo, "add", str(yaml_path.relative_to(repo))).returncode == 0
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-qm", "best params")
    pushed = _dvc(repo, "push")
    assert pushed.returncode == 0 and (tmp_path / "radiodiff-dvc-remote").is_dir(), pushed.stderr[-2000:]
    run_git(tmp_path, "clone", "-q", str(repo), "clone")
    pulled = _dvc(tmp_path / "clone", "pull", "tune/best_params.yaml.dvc")
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    assert (tmp_path / "clone" / "tune" / "best_params.yaml").read_text() == yaml_path.read_text()


@pytest.mark.slow
def test_a_killed_trial_becomes_fail_and_is_retried_once_with_its_params(tmp_path, dataset, vae_file):
    """SIGKILL a `radiodiff tune` process mid-trial: its heartbeat stops, and the next session
    marks the trial FAIL and runs it again with the same params (once)."""
    import os
    import signal
    import sys
    import time

    raw = yaml.safe_load(TINY.read_text())
    raw["tune"].update(heartbeat_s=1, grace_s=2, trial_steps=100_000, val_every=100_000)
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump(raw))
    raw["tune"].update(trial_steps=4, val_every=2)
    quick = tmp_path / "quick.yaml"
    quick.write_text(yaml.safe_dump(raw))
    storage = tmp_path / "tune" / "study.db"
    storage.parent.mkdir()
    # The study's tables exist before the tune process starts, so that polling them below never
    # races the process creating them (two schema set-ups on one new sqlite file collide).
    optuna.create_study(study_name="tiny", storage=f"sqlite:///{storage}")
    command = [str(Path(sys.executable).parent / "radiodiff"), "tune", "--params", str(slow), "--storage", str(storage),
               "--dataset", str(dataset / "data"), "--vae", str(vae_file[0]), "--work-dir", str(tmp_path / "work"),
               "--threads", "1", "--no-mlflow", "--n-trials", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the trial never started"
            if storage.is_file():
                trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{storage}").trials
                if trials and trials[0].state == optuna.trial.TrialState.RUNNING:
                    break
            time.sleep(0.5)
        time.sleep(2.0)  # a few heartbeats in
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    time.sleep(3.0)  # past the grace period
    assert _tune(tmp_path, dataset, vae_file[0], "--n-trials", "1", params=quick) == 0
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{storage}").trials
    killed, retry = trials[0], trials[1]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert retry.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert retry.params == killed.params and retry.system_attrs["failed_trial"] == killed.number
    assert len(trials) == 2  # the retry was this session's one trial


def test_the_storage_spec_is_a_file_a_database_url_or_a_journal(tmp_path):
    from radiodiff.tune_config import TuneConfig
    from radiodiff.tuning.storage import open_storage, parse_storage

    assert parse_storage("tune/study.db").kind == "sqlite" and parse_storage("tune/study.db").files_dir == Path("tune")
    url = parse_storage("postgresql://u@host/db")
    assert url.kind == "url" and url.files_dir == Path("tune") and str(url) == "postgresql://u@host/db"
    journal = parse_storage(f"journal:{tmp_path / 'j' / 'study.log'}")
    assert journal.kind == "journal" and journal.files_dir == tmp_path / "j"
    study = optuna.create_study(study_name="s", storage=open_storage(journal, TuneConfig()))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=open_storage(journal, TuneConfig())).trials) == 2
    with pytest.raises(UserError, match="cannot open the study storage"):
        open_storage(parse_storage("nosuchdialect://x/y"), TuneConfig())
    with pytest.raises(UserError, match="empty"):
        parse_storage("  ")


@pytest.mark.slow
def test_the_optuna_dashboard_of_make_ui_serves_the_study_on_loopback(tmp_path):
    """`make ui` starts optuna-dashboard on the study file: it answers on loopback."""
    import os
    import signal
    import socket
    import sys
    import time
    import urllib.request

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="seen", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dashboard = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--host", "127.0.0.1",
                                  "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert dashboard.poll() is None, "optuna-dashboard exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.5)
        assert [study["study_name"] for study in studies["study_summaries"]] == ["seen"]
    finally:
        os.killpg(dashboard.pid, signal.SIGTERM)
        dashboard.wait(timeout=20)
    assert "optuna-dashboard $(OPTUNA_STORAGE) --host 127.0.0.1" in (REPO_ROOT / "Makefile").read_text()
