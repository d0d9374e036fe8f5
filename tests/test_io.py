"""Atomic outputs: readers never see a partial file or folder."""

from __future__ import annotations

import pytest

from radiodiff.io import atomic_dir, atomic_path, atomic_write_text


def test_atomic_write_replaces_whole(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_leaves_old_file_and_no_temporaries(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_swaps_or_keeps(tmp_path):
    target = tmp_path / "dataset"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("cut", ["between the renames", "before removing the old folder"])
def test_atomic_dir_killed_mid_swap_is_put_right_by_the_next_call(tmp_path, cut):
    """A process killed while swapping leaves its old folder aside (named after it): the next
    call puts it back if the new one never arrived, and removes it if it did."""
    target, pid = tmp_path / "dataset", _dead_pid()
    aside = tmp_path / f".dataset.old-{pid}"
    aside.mkdir()
    (aside / "old").write_text("1")
    if cut == "before removing the old folder":
        target.mkdir()
        (target / "new").write_text("2")
    kept = "old" if cut == "between the renames" else "new"
    with pytest.raises(RuntimeError):
        with atomic_dir(target):
            assert sorted(p.name for p in target.iterdir()) == [kept]  # put right before the body runs
            raise RuntimeError("this write fails")
    assert sorted(p.name for p in target.iterdir()) == [kept]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_atomic_dir_leaves_a_live_writers_folders_alone(tmp_path):
    import os

    aside = tmp_path / f".dataset.old-{os.getppid()}"  # a live process, mid-swap
    aside.mkdir()
    with atomic_dir(tmp_path / "dataset") as tmp:
        (tmp / "a").write_text("1")
    assert aside.is_dir() and sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["a"]


def test_created_files_are_world_readable(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "x")
    assert target.stat().st_mode & 0o044 == 0o044
