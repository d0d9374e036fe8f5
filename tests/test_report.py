"""docs/RESULTS.md is written from the run's files alone: every figure in it is one of theirs."""

from __future__ import annotations

import json

from radiodiff.evaluation.report import render_report


def test_the_report_quotes_the_metrics_and_tables_it_is_given(tmp_path):
    metrics, plots = tmp_path / "metrics", tmp_path / "plots"
    metrics.mkdir()
    plots.mkdir()
    (metrics / "train_vae.json").write_text(json.dumps({"test_nmse": 0.0123456, "train_seconds": 98.7}))
    (metrics / "tune_few_step.json").write_text(json.dumps({"v": {"ddim_1_nmse": 0.0497, "train_seconds": 38.7}}))
    (metrics / "train_baseline.json").write_text(json.dumps({  # its plan fell short: a coda made up the time
        "test_nmse": 0.0136, "parity_steps": 1704, "parity_coda_steps": 73, "generative_train_seconds": 218.4,
        "train_seconds_over_generative": 1.004, "train_seconds": 219.3}))
    (metrics / "evaluate.json").write_text(json.dumps({"flux_nmse": 0.0166, "flux_counts": 0.0,
                                                       "evaluate_seconds": 161.0}))
    (plots / "evaluate_table.json").write_text(json.dumps([
        {"method": "ddpm_full", "unet_calls_per_map": 1000, "nmse": 0.0205, "nmse_ci95": 0.0128, "ssim": 0.914},
        {"method": "baseline", "unet_calls_per_map": 0, "nmse": 0.0158, "nmse_ci95": float("nan"), "ssim": 0.93}]))
    (plots / "evaluate_samples.png").write_bytes(b"png")
    text = render_report(metrics, plots, run={"code": "abc123"})
    assert "- code: abc123" in text
    assert "| train_vae | KL-VAE, test reconstruction: NMSE 0.0123 | 98.7 |" in text
    assert "| tune_few_step (v) | one-step samplers given the tail's fine-tuning: validation ddim_1 NMSE 0.0497 | 38.7 |" \
        in text
    assert ("| train_baseline | supervised RadioUNet-style peer, every test map: NMSE 0.0136, planned steps 1,704, "
            "then at the floor lr 73, to match the generative chain's training s 218, trained x that time 1.00 "
            "| 219 |") in text
    assert "| served Flux NMSE | 0.0166 |" in text and "| evaluate | every method" in text
    assert "| ddpm_full | 1,000 | 0.0205 ± 0.0128 | 0.9140 |" in text
    assert "| baseline | 0 | 0.0158 | 0.9300 |" in text  # no interval where the table has none
    assert "[test maps: truth beside each method](../plots/evaluate_samples.png)" in text
    assert "By scenario" not in text and "prepare" not in text  # what the run did not write is not invented
    assert "new_layout: nearest-layout reuse" not in text
    (plots / "evaluate_new_layout.csv").write_text(
        "distance_from,distance_to,maps,edited_maps,own_nmse,nearest_nmse,served_nmse,nearest_vs_own\n"
        "0.0,0.075,3,3,0.0061,0.0062,0.0062,0.0164\n0.3,inf,4,0,0.018,0.0181,0.018,0.0055\n")
    text = render_report(metrics, plots, run={"code": "abc123"})
    assert "| 0.0000 | 0.0750 | 3 | 3 | 0.0061 | 0.0062 | 0.0164 | 0.0062 |" in text
    assert "| 0.3000 | - | 4 | 0 | 0.0180 | 0.0181 | 0.0055 | 0.0180 |" in text


def test_the_report_names_its_commit_dirty_only_for_a_change_besides_itself(tmp_path, monkeypatch):
    """DVC removes the report before its stage runs, so a clean checkout must not read dirty."""
    from pipelines.report import _commit
    from radiodiff.artifacts.layout import REPORT_FILE
    from tests.conftest import run_git

    (tmp_path / REPORT_FILE).parent.mkdir(parents=True)
    (tmp_path / REPORT_FILE).write_text("old report\n")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    run_git(tmp_path, "init", "-q")
    run_git(tmp_path, "add", ".")
    run_git(tmp_path, "commit", "-q", "-m", "one")
    monkeypatch.chdir(tmp_path)
    (tmp_path / REPORT_FILE).unlink()  # as DVC leaves it for the stage
    clean = _commit()
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert _commit() == f"{clean}-dirty"
