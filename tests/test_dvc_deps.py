"""dvc.yaml follows the code: each stage depends on every source file it imports, and its
output paths are the ones `radiodiff.artifacts.layout` names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from import_graph import ROOT, source_files, stage_module, uncovered
from radiodiff.artifacts.layout import BANK_DIR, DATASET_DIR, MODELS, REPORT_FILE, metrics_file

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
CODE = ("radiodiff/", "pipelines/")


def _paths(entries: list) -> list[str]:
    """dvc.yaml list entries as paths (an entry may be `path: {options}`)."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_depends_on_every_module_it_imports(stage):
    files = source_files(stage_module(STAGES[stage]["cmd"]))
    missing = uncovered(files, _paths(STAGES[stage]["deps"]))
    assert missing == [], f"add to stage {stage}'s deps in dvc.yaml: {missing} (or its folder)"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_code_dep_exists(stage):
    stale = [dep for dep in _paths(STAGES[stage]["deps"]) if dep.startswith(CODE) and not (ROOT / dep).exists()]
    assert stale == []


def test_a_deleted_dep_line_is_caught():
    deps = _paths(STAGES["evaluate"]["deps"])
    files = source_files(stage_module(STAGES["evaluate"]["cmd"]))
    for dropped in ("radiodiff/diffusion", "radiodiff/flux.py", "pipelines/_stage.py"):
        assert dropped in deps
        assert uncovered(files, [d for d in deps if d != dropped]), dropped


def _stages_covering(path: str) -> set[str]:
    return {name for name, stage in STAGES.items() if not uncovered({Path(path)}, _paths(stage["deps"]))}


def test_sampling_code_reaches_exactly_the_stages_that_sample():
    # What `dvc status` reports after an edit of the sampler: every stage that runs it, no other.
    assert _stages_covering("radiodiff/diffusion/sampling.py") == {
        "train_ldm", "train_ldm_alt", "build_bank", "tune_tail", "tune_few_step", "evaluate"}
    # Every stage parses params, but the report, which reads only what the others wrote.
    assert _stages_covering("radiodiff/config.py") == set(STAGES) - {"report"}


def test_outputs_are_the_layout_paths():
    outs = {name: set(_paths(stage.get("outs"))) for name, stage in STAGES.items()}
    assert outs["prepare"] == {DATASET_DIR.as_posix()}
    assert outs["build_bank"] == {BANK_DIR.as_posix()}
    models = {name: path.as_posix() for name, path in MODELS.all().items()}
    assert outs["train_vae"] == {models["vae"]} and outs["train_ldm"] == {models["ldm"]}
    assert outs["train_ldm_alt"] == {models["alternatives"]} and outs["train_baseline"] == {models["baseline"]}
    assert outs["tune_tail"] == {models["flux_tail"]} and outs["tune_few_step"] == {models["few_steps"]}
    model_deps = {dep for stage in STAGES.values() for dep in _paths(stage["deps"]) if dep.startswith("models/")}
    assert model_deps <= set(models.values())
    assert outs["report"] == {REPORT_FILE.as_posix()}
    for name, stage in STAGES.items():
        if name != "report":
            assert metrics_file(name).as_posix() in _paths(stage.get("metrics")), name
