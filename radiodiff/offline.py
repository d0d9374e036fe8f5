"""Offline and quiet by default: the one list of the switches that turn off the telemetry and
chatter of the stack's tools. Every Python entry point applies it before importing MLflow,
Prefect or DVC (they read these at import); a user's own settings win. The Makefile exports
the same switches for the tools it starts itself (dvc, the UIs).
"""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DVC_NO_ANALYTICS": "1",
    # Dask's workers log every start and stop at INFO; keep its errors only.
    "DASK_LOGGING__DISTRIBUTED": "error",
    # The ephemeral API server a stage starts misses its 20 s default on a loaded 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def apply_offline_defaults() -> None:
    """Set every switch of `OFFLINE_ENV` that the environment does not set already."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
