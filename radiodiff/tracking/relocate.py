"""Keep the project's MLflow store valid when the checkout moves.

MLflow records artifact locations as absolute `file://` URIs (it makes a relative one absolute
when the experiment is created). A checkout moved to another folder keeps its `mlruns/`, but
every run, logged model and registered version then points into the old folder: artifacts,
figures and `models:/` URIs stop resolving. `relocate_store` notices that the experiment's
artifact root is gone and that `mlruns/artifacts` sits beside the database instead, and
rewrites the old prefix to the new one in the store's tables, once. A clone starts with an
empty store (git keeps no `mlruns/` contents), so it needs nothing.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

# (table, column) pairs that hold artifact locations in MLflow 3's schema.
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "source"),
                    ("model_versions", "storage_location"))
ARTIFACTS = "artifacts"


def _path_of(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def relocate_store(store: Path, experiment: str) -> tuple[Path, Path] | None:
    """If experiment `experiment` of the sqlite store in folder `store` (`mlflow.db`) has an
    artifact root that no longer exists while `store/artifacts` does, rewrite every location
    under the old root to the new one; returns (old root, new root), or None when nothing moved."""
    database = store / "mlflow.db"
    new_root = (store / ARTIFACTS).resolve()
    if not database.is_file() or not new_root.is_dir():
        return None
    with sqlite3.connect(database) as db:
        try:
            row = db.execute("SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)).fetchone()
        except sqlite3.OperationalError:  # an empty or foreign database: MLflow will set it up
            return None
        old_root = None if row is None else _path_of(row[0])
        if old_root is None or old_root == new_root or old_root.exists() or old_root.name != ARTIFACTS:
            return None
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for old, new in ((old_root.as_uri(), new_root.as_uri()), (str(old_root), str(new_root))):
            for table, column in LOCATION_COLUMNS:
                if table in tables:
                    db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 - fixed names
                               f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
    print(f"mlflow: the checkout moved; artifact locations rewritten from {old_root} to {new_root}",
          file=sys.stderr)
    return old_root, new_root
