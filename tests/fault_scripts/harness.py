"""The parent side of the fault tests: start a driver script, watch it, SIGKILL it at a chosen point.

A driver prints one line per unit of progress ("step 3", "simulate map 12"); the parent
kills it after a given line or once a file condition holds. Drivers can also kill
themselves at a precise point inside a write (`torn_write`), which a parent cannot hit.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS.parents[1]


def script(name: str, *args: str) -> list[str]:
    """The command line running driver `name` (a file in tests/fault_scripts/) with `args`."""
    return [sys.executable, str(SCRIPTS / name), *args]


class Driver:
    """A command running in a subprocess of its own process group; stdout lines are collected
    as they come, stderr goes to a file in `log_dir` (shown when something fails)."""

    def __init__(self, argv: list[str], *, log_dir: Path, cwd: Path | None = None, env: dict | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / f"{Path(argv[-1] if len(argv) < 2 else argv[1]).stem}-{time.monotonic_ns()}.err"
        self._stderr = open(self.stderr_path, "w")
        if env is None:  # the drivers import `tests.fault_scripts` from the repository
            paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
        environment = dict(env, PYTHONUNBUFFERED="1")
        # Own process group: a kill reaches the children too (DVC's stage command, Prefect's server).
        self.proc = subprocess.Popen(argv, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 120) -> str:
        """Block until a stdout line satisfies `predicate`; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise TimeoutError(f"no matching line within {timeout} s; {self._tail()}") from None
            if line is None:
                raise RuntimeError(f"exited ({self.proc.wait()}) before a matching line; {self._tail()}")
            self.lines.append(line)
            if predicate(line):
                return line

    def wait_until(self, condition: Callable[[], bool], timeout: float = 120, poll: float = 0.01) -> None:
        """Block until `condition()` holds while the process is still running."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited ({self.proc.returncode}) before the condition held; {self._tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s; {self._tail()}")
            time.sleep(poll)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the whole process group, wait for the driver; return its exit code."""
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.proc.pid, sig)
        code = self.finish(timeout=60, check=False)
        if sig == signal.SIGKILL:
            self._wait_group_gone()
        return code

    def _wait_group_gone(self, timeout: float = 30) -> None:
        """Wait until no live process of the group is left, so that nothing of a killed run
        still writes while the next one starts (zombies count as gone: without an init that
        reaps orphans they stay forever)."""
        deadline = time.monotonic() + timeout
        while _live_members(self.proc.pid):
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes of group {self.proc.pid} outlived SIGKILL")
            time.sleep(0.05)

    def finish(self, timeout: float = 300, check: bool = True) -> int:
        """Wait for the driver to exit and collect the rest of its output."""
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        self._stderr.close()
        if check and code != 0:
            raise AssertionError(f"driver failed with exit code {code}; {self._tail()}")
        return code

    def _tail(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return "stderr tail:\n" + self.stderr_path.read_text()[-3000:]


def _live_members(group: int) -> list[int]:
    """Pids of the non-zombie processes in process group `group` (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                members.append(int(stat.parent.name))
    return members


def die_now() -> None:
    """SIGKILL this process: no cleanup, no finally blocks, no atexit (what a crash does)."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def torn_write(path: Path, payload: bytes) -> None:
    """Write the first half of `payload` to `path`, flushed to disk, then die."""
    with open(path, "wb") as handle:
        handle.write(payload[: len(payload) // 2])
        handle.flush()
        os.fsync(handle.fileno())
    die_now()
