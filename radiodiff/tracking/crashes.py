"""Runs whose process died: a SIGKILLed stage cannot end its own MLflow run, so the next
start of the same stage does it, and a SIGTERM ends the run FAILED before the process exits.

Each stage run is tagged with its owner (`host`, `pid`, and the pid's start time, so that a
recycled pid is not mistaken for the owner). When a stage starts, the runs of that stage
still RUNNING whose owner on this host is gone are set FAILED, tagged `failure_reason`.
Runs owned by other hosts are left alone: their processes cannot be checked from here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient

TAG_HOST, TAG_PID, TAG_PID_STARTED = "host", "pid", "pid_started"
TAG_REASON = "failure_reason"


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run: host, pid and the pid's start time."""
    pid = os.getpid()
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(pid), TAG_PID_STARTED: (_proc_stat(pid) or ("", ""))[1]}


def fail_orphaned_runs(stage: str, experiment_id: str) -> list[str]:
    """Set FAILED every RUNNING run of `stage` whose owner process on this host has died;
    returns their run ids. Runs of live processes (a parallel start) are untouched."""
    host = socket.gethostname()
    query = f"tags.stage = '{_quoted(stage)}' and attributes.status = 'RUNNING' and tags.host = '{_quoted(host)}'"
    client = MlflowClient()
    failed = []
    for run in client.search_runs([experiment_id], filter_string=query, max_results=1000):
        tags = run.data.tags
        if not tags.get(TAG_PID, "").isdigit() or _alive(int(tags[TAG_PID]), tags.get(TAG_PID_STARTED, "")):
            continue
        reason = f"process {tags[TAG_PID]} on {host} ended without closing the run (killed or crashed)"
        client.set_tag(run.info.run_id, TAG_REASON, reason)
        client.set_terminated(run.info.run_id, status="FAILED")
        failed.append(run.info.run_id)
    return failed


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM (what schedulers send before SIGKILL) raises in the main thread,
    so that an MLflow run opened inside ends FAILED on the way out. A handler installed
    before (such as Prefect's, which raises its own TerminationSignal) runs first; if it
    returns, SystemExit(128 + SIGTERM) follows: the exit status of a process killed by
    SIGTERM. An ignored SIGTERM stays ignored. The earlier handler is restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        if callable(previous):
            previous(signum, frame)
        if previous != signal.SIG_IGN:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _alive(pid: int, started: str) -> bool:
    """Whether `pid` is still the process that owned the run (not a zombie, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    stat = _proc_stat(pid)
    if stat is None:  # no /proc (not Linux): trust the pid; or it died a moment ago
        return not Path("/proc/self").exists()
    state, start = stat
    return state not in ("Z", "X") and (not started or start == started)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks since boot) of `pid` from /proc, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces
    return fields[0], fields[19]


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")

