"""Driver: open a stage's MLflow run with `tracking.stage_run`, print its id, then work until killed.

    python tests/fault_scripts/tracked.py STAGE

Uses the store in MLFLOW_TRACKING_URI. Prints "run RUN_ID" once the run is open.
"""

from __future__ import annotations

import sys
import time

from radiodiff import tracking


def main() -> None:
    with tracking.stage_run(sys.argv[1], {"work_seconds": 120}) as run:
        print(f"run {run.run_id}", flush=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # stands in for a stage's work: short steps, no signal masking
            time.sleep(0.05)


if __name__ == "__main__":
    main()
