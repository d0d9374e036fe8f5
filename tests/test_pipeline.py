"""The whole DVC pipeline on a toy profile, in a copy of the repository: every stage runs as a
Prefect flow and an MLflow run, outputs and metrics appear, and a second repro is a no-op."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

STAGES = ("prepare", "train_vae", "train_ldm", "train_ldm_alt", "train_baseline", "build_bank", "tune_tail",
          "tune_few_step", "evaluate")
TRAINING = ("train_vae", "train_ldm", "train_ldm_alt", "train_baseline")


def _copy_project(target: Path) -> None:
    for name in ("radiodiff", "pipelines", "dvc.yaml", ".dvcignore"):
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target / name)
    shutil.copy2(REPO_ROOT / "tests" / "tiny_params.yaml", target / "params.yaml")


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd), DVC_NO_ANALYTICS="1", PREFECT_HOME=str(cwd / ".prefect"),
               DVC_SITE_CACHE_DIR=str(cwd / ".dvc-site"), MPLCONFIGDIR=str(cwd / ".mpl"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)  # the stages' own default store, inside the copy
    dvc = str(Path(sys.executable).parent / "dvc")
    return subprocess.run([dvc, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _serve_new_layouts(root: Path, count: int) -> None:
    """`radiodiff predict --queries --bank bank` on `count` layouts no stage has seen, twice: the
    first run misses and stores them beside the built bank, the second is served from there."""
    import numpy as np
    from PIL import Image

    lines = []
    for i in range(count):
        layout = np.zeros((256, 256), np.uint8)
        layout[40 + 20 * i:90 + 20 * i, 120:200] = 255
        Image.fromarray(layout).save(root / f"new_layout_{i}.png")
        lines.append(json.dumps({"buildings": f"new_layout_{i}.png", "tx": [10, 10]}))
    (root / "new_queries.jsonl").write_text("\n".join(lines) + "\n")
    import yaml  # the toy profile serves any layout from its nearest one: serve each as its own

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["flux"]["nearest_max_distance"] = 0.0
    (root / "serving_params.yaml").write_text(yaml.safe_dump(params))
    radiodiff = str(Path(sys.executable).parent / "radiodiff")
    for expected in (f"{count} miss", f"{count} hit"):
        served = subprocess.run([radiodiff, "predict", "--queries", "new_queries.jsonl", "--out", "served",
                                 "--bank", "bank", "--params", "serving_params.yaml"],
                                cwd=root, capture_output=True, text=True, timeout=600)
        assert served.returncode == 0 and expected in served.stdout, served.stdout + served.stderr
    assert len(list((root / "bank-serving").glob("part-*.parquet"))) == count


def _score_a_radiomapseer_folder(root: Path, folder: Path) -> None:
    """`radiodiff evaluate --radiomapseer` in the project after its run: the trained files score
    a folder in the dataset's layout, with the DDIM steps of the evaluate stage's best DDIM row."""
    from tests.radiomapseer_folder import write_radiomapseer_folder

    write_radiomapseer_folder(folder, maps=(11,), tx_ids=(0,))
    ddim = [row for row in json.loads((root / "plots" / "evaluate_table.json").read_text()) if row["family"] == "ddim"]
    steps = min(ddim, key=lambda row: row["nmse"])["unet_calls_per_map"]
    scored = subprocess.run([str(Path(sys.executable).parent / "radiodiff"), "evaluate", "--radiomapseer", str(folder),
                             "--no-simulator"], cwd=root, capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert f"ddim_{steps} (best DDIM of plots/evaluate_table.json)" in scored.stderr
    assert scored.stdout.strip().splitlines()[-1].endswith("(1 maps, flux)")


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_is_a_no_op(tmp_path, tmp_path_factory):
    import mlflow

    _copy_project(tmp_path)
    assert _dvc(tmp_path, "init", "--no-scm", "-q").returncode == 0
    first = _dvc(tmp_path, "repro")
    assert first.returncode == 0, first.stderr[-3000:]
    for path in ("data/prepared/index.parquet", "models/vae.pt", "models/ldm.pt", "models/alt/kc.pt", "models/alt/flow.pt",
                 "models/baseline.pt",
                 "models/flux_tail.pt", "models/few_step/v.pt", "models/few_step/kc.pt", "models/few_step/flow.pt",
                 "plots/evaluate_tradeoff.csv", "plots/evaluate_tradeoff.png"):
        assert (tmp_path / path).is_file(), path
    for stage in STAGES:
        metrics = json.loads((tmp_path / "metrics" / f"{stage}.json").read_text())
        assert metrics, stage
    assert "test_tx_response" in json.loads((tmp_path / "metrics" / "train_ldm.json").read_text())
    evaluated = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert {"flux_speedup_b1", "flux_nmse_loss", "baseline_nmse", "ddim_same_calls_nmse",
            "flux_vs_tuned_same_calls_nmse_change"} <= set(evaluated)
    methods = {row["method"] for row in json.loads((tmp_path / "plots" / "evaluate_table.json").read_text())}
    assert {"ddpm_full", "ddim_1", "decoupled_1", "flow_1", "flux_t30_tail1", "flux_tuned_t10_tail1",
            "flux_kc_t30_tail1", "flux_flow_t30_tail1", "ddim_1_tuned", "decoupled_1_tuned", "flow_1_tuned",
            "baseline"} <= methods
    assert set(json.loads((tmp_path / "metrics" / "train_ldm_alt.json").read_text())) == {"kc", "flow"}
    assert "speedup_b1" in first.stdout  # the table printed at the end of the stage
    bank = json.loads((tmp_path / "metrics" / "build_bank.json").read_text())
    assert bank["entries"] == 4 * 2 * 2  # train + test layouts x t_mids x seeds
    assert bank["entries_kc"] == bank["entries_flow"] == 1 * 2 * 2  # the other objectives: test layouts only
    verify = subprocess.run([str(Path(sys.executable).parent / "radiodiff"), "bank", "verify", str(tmp_path / "bank")],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and "24 entries" in verify.stdout, verify.stderr

    lock = (tmp_path / "dvc.lock").read_bytes()
    outputs = {p: p.stat().st_mtime_ns for folder in ("models", "metrics", "bank") for p in (tmp_path / folder).rglob("*")}
    second = _dvc(tmp_path, "repro")
    assert second.returncode == 0
    assert "didn't change, skipping" in second.stdout and "Running stage" not in second.stdout
    status = _dvc(tmp_path, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout  # every stage up to date
    assert (tmp_path / "dvc.lock").read_bytes() == lock  # no hash, param or output entry changed
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs  # and no output was rewritten

    # Serving from the built bank never changes it: misses of new layouts go to bank-serving.
    _serve_new_layouts(tmp_path, count=5)
    status = _dvc(tmp_path, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs

    _score_a_radiomapseer_folder(tmp_path, tmp_path_factory.mktemp("radiomapseer"))
    status = _dvc(tmp_path, "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
    assert {p: p.stat().st_mtime_ns for p in outputs} == outputs

    report = (tmp_path / "docs" / "RESULTS.md").read_text()  # the last stage: the run's report
    assert "## Every method on the tx_moved maps" in report and "| ddpm_full |" in report and "## Stages" in report

    # DVC's run cache: a configuration that ran before comes back without running, the built
    # bank (a plain output now, not a persisted one) and evaluate's outputs included.
    params = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params.replace("timing_repeats: 1", "timing_repeats: 2"))
    changed = _dvc(tmp_path, "repro", "evaluate")
    assert changed.returncode == 0 and "Running stage 'evaluate'" in changed.stdout, changed.stderr[-2000:]
    (tmp_path / "params.yaml").write_text(params)
    shutil.rmtree(tmp_path / "bank")
    restored = _dvc(tmp_path, "repro", "evaluate")
    assert restored.returncode == 0, restored.stderr[-2000:]
    assert "Running stage 'evaluate'" not in restored.stdout, restored.stdout
    assert "Stage 'evaluate' is cached - skipping run, checking out outputs" in restored.stdout
    assert "Running stage 'build_bank'" not in restored.stdout and (tmp_path / "bank" / "bank.json").is_file()
    assert (tmp_path / "dvc.lock").read_bytes() == lock

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["radiodiff"], output_format="list")
    by_stage = {run.data.tags["stage"]: run for run in runs}
    assert set(by_stage) == set(STAGES)
    for stage, run in by_stage.items():
        assert run.info.status == "FINISHED", stage
        assert run.data.params and run.data.metrics, stage
        assert run.data.tags["git_commit"] and run.data.tags["params_hash"]
    alternatives = {run.data.tags.get("objective"): run for run in runs if run.data.tags["stage"] == "train_ldm_alt"}
    assert set(alternatives) == {"kc", "flow"}  # one run per objective, each named for it
    assert {run.info.run_name for run in alternatives.values()} == {"train_ldm_alt_kc", "train_ldm_alt_flow"}
    for stage, run in [(stage, by_stage[stage]) for stage in TRAINING] + list(alternatives.items()):
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert "checkpoint" in artifacts and any(p.endswith(".png") for p in artifacts), (stage, artifacts)
    assert {p.name for p in (tmp_path / "plots" / "ldm_alt").iterdir()} == {"kc_samples.png", "flow_samples.png"}
    client = mlflow.MlflowClient()
    assert "checkpoint" in {a.path for a in client.list_artifacts(by_stage["tune_tail"].info.run_id)}
    controls = {run.data.tags.get("objective"): run for run in runs if run.data.tags["stage"] == "tune_few_step"}
    assert set(controls) == {"v", "kc", "flow"}  # the served objective and each alternative
    assert set(json.loads((tmp_path / "metrics" / "tune_few_step.json").read_text())) == {"v", "kc", "flow"}
    assert "evaluate_tradeoff.png" in {a.path for a in client.list_artifacts(by_stage["evaluate"].info.run_id)}
    history = mlflow.MlflowClient().get_metric_history(by_stage["train_vae"].info.run_id, "train/loss")
    assert len(history) == 3  # a loss curve, one point per step
