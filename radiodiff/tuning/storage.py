"""Where an Optuna study lives: a sqlite file (default), a database URL, or a journal file.

`tune.storage` (or `radiodiff tune --storage`) is one of
- a path, `tune/study.db`: a sqlite file, for one machine;
- a database URL, `postgresql://user@host/db` or `mysql+pymysql://...`: several workers on
  several machines share the study (each runs `radiodiff tune` with the same URL);
- `journal:PATH`: Optuna's journal file, several workers on one shared filesystem without a
  database server (file locks; no heartbeat, see below).

On the database storages (sqlite included) every running trial sends a heartbeat each
`tune.heartbeat_s` seconds. A trial whose process was killed stops beating; once it has been
silent for `tune.grace_s`, the next trial any worker starts marks it FAIL and enqueues it again
once with the same params (Optuna's RetryFailedTrialCallback). A journal file has no
heartbeat: a killed trial there stays RUNNING, and it is not retried.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna

from radiodiff.errors import UserError
from radiodiff.tune_config import TuneConfig

JOURNAL_PREFIX = "journal:"
MAX_RETRIES = 1  # a killed trial runs once more with the same params; a second kill leaves it FAIL


@dataclass(frozen=True)
class StudyStorage:
    """A parsed storage spec: `kind` (sqlite, url, journal), its `target` (a path or the URL)
    and `files_dir`, where best_params.* are written (beside the file, else `tune/`)."""

    kind: str
    target: str
    files_dir: Path

    def __str__(self) -> str:
        return self.target if self.kind == "url" else f"{JOURNAL_PREFIX}{self.target}" if self.kind == "journal" \
            else self.target


def parse_storage(spec: str, default_dir: Path = Path("tune")) -> StudyStorage:
    """A `StudyStorage` of `spec` (see the module docstring); an empty spec is a UserError."""
    spec = str(spec).strip()
    if not spec:
        raise UserError("the study storage is empty: give a file, a database URL or journal:FILE")
    if "://" in spec:
        return StudyStorage("url", spec, default_dir)
    if spec.startswith(JOURNAL_PREFIX):
        path = Path(spec.removeprefix(JOURNAL_PREFIX))
        if not path.name:
            raise UserError(f"{spec!r}: journal:FILE needs a file name")
        return StudyStorage("journal", str(path), path.parent)
    return StudyStorage("sqlite", spec, Path(spec).parent)


def open_storage(storage: StudyStorage, tune: TuneConfig) -> optuna.storages.BaseStorage:
    """The Optuna storage object, with heartbeats and one retry of killed trials where the
    storage supports them."""
    if storage.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if storage.kind == "sqlite":
        path = Path(storage.target)
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path.resolve()}"
    else:
        url = storage.target
    from sqlalchemy.exc import SQLAlchemyError

    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8: they work
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=tune.heartbeat_s, grace_period=tune.grace_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
        except (ImportError, ValueError, SQLAlchemyError) as exc:  # an unknown dialect, a driver not installed
            raise UserError(f"cannot open the study storage {url!r}: {str(exc).splitlines()[0][:200]}") from None
