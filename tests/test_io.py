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


def test_created_files_are_world_readable(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "x")
    assert target.stat().st_mode & 0o044 == 0o044
