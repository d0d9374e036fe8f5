"""Atomic file output: a reader never sees a half-written file, and a write of several files
that belong together is not cut in two by Ctrl-C."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import inspect
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from radiodiff.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `target`; rename it onto `target` only on success.

    The temporary file lives in the same folder so the final `os.replace` is atomic on
    POSIX. If the body raises, the temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp creates 0600
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike, payload: bytes) -> None:
    """Write `payload` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(payload)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; swap it in as `target` on success.

    Readers see either the old folder or the complete new one; a failure leaves `target`
    as it was and removes the temporary folder. The swap is two renames (the old folder
    aside, the new one in), so a process killed between them (SIGKILL runs no cleanup)
    leaves no `target`: the next call for `target` puts the old folder back first. The
    folders beside `target` are named after their process, so the next call also removes
    what a killed one left.
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    pattern = glob.escape(target.name)
    for stale in target.parent.glob(f".{pattern}.old-*"):  # a swap cut short, or its cleanup
        owner = stale.name.rsplit("-", 1)[1]
        if owner.isdigit() and not process_alive(int(owner)):
            if target.exists():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                os.replace(stale, target)
    for stale in target.parent.glob(f".{pattern}.*.tmp"):
        owner = stale.name[len(target.name) + 2:].split("-", 1)[0]
        if owner.isdigit() and not process_alive(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def signals_deferred(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold `signums` back until the body is done, then deliver them to the handlers that were
    in place: for a few files that are only consistent together (a bank part and the record
    that lists it), where Ctrl-C between the two would leave a file no record vouches for.

    Python runs signal handlers in the main thread only, so elsewhere there is nothing to hold
    back. SIGKILL cannot be held; what reads those files must still survive it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum)) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for signum in caught:
            _deliver(signum)


def _deliver(signum: int) -> None:
    """Run `signum`'s handler now, as a plain call from here (its frame argument is this
    function's). `signal.raise_signal` would leave a Python handler pending until the
    interpreter's next check, and if a finalizer (`__del__`, a weakref callback) happens to run
    then, the KeyboardInterrupt raised inside it is printed and dropped: a held Ctrl-C lost."""
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, inspect.currentframe())
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action: the process ends


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a whole file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def safe_child(root: str | os.PathLike, name: str) -> Path:
    """`root / name`, refused (UserError) unless it stays inside `root`.

    `name` comes from a user or from data (a map id, a split, a stage name): an empty name,
    an absolute path, a `..` part, a NUL byte, or a symlink inside `root` that points out of
    it would let a write land elsewhere, so each is refused before any file is touched.
    """
    root = Path(root)
    text = os.fspath(name)
    parts = Path(text).parts
    if not text or "\0" in text or Path(text).is_absolute() or ".." in parts or parts in ((), (".",)):
        raise UserError(f"{text!r} is not a plain name inside {root}: refusing to write outside it")
    child = root / text
    if not child.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{child} leaves {root} through a symbolic link: refusing to write there")
    return child
