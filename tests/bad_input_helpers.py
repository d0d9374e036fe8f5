"""Helpers shared by the bad-input tests (test_bad_params, test_bad_cli, test_bad_import).

Not collected by pytest: the file name has no `test_` prefix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from PIL import Image

# capsys and the module's model files are reused across examples on purpose: each run reads
# its own output back before the next one starts.
HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=HEALTH)


def files_under(folder: Path) -> set[Path]:
    """Every file and folder below `folder`, to show that a refused command wrote nothing."""
    return {p for p in folder.rglob("*")}


def assert_refused(code: int, err: str, folder: Path, before: set[Path], *fragments: str) -> None:
    """Exit code 2, one `error:` line naming every fragment, no traceback, `folder` unchanged."""
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert files_under(folder) == before, "a failed command left files behind"


def write_png(path: Path, array: np.ndarray) -> Path:
    """Save `array` ([H, W] or [H, W, 3], any PIL-supported dtype) as a PNG at `path`."""
    Image.fromarray(array).save(path)
    return path
