"""Shared fixtures: a temporary MLflow store and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """Point MLflow at a fresh sqlite store inside `tmp_path`."""
    store = tmp_path / "mlruns"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("RADIODIFF_ARTIFACT_ROOT", str(store / "artifacts"))
    return store


def pytest_configure(config):
    """One torch thread: the test models are tiny, and on a shared 2-core machine OpenMP's
    thread hand-off made them 10-70x slower with two."""
    import torch

    torch.set_num_threads(1)
