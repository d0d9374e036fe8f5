"""A bank writer killed at any step of a write: the bank verifies at once, serves each entry
once, and the next writer finishes (or undoes) the cut-short write.

A kill is an exception nothing in the bank catches, raised at the step under test: like a
SIGKILL, it runs none of the writer's remaining steps. (tests/test_faults.py kills real
processes; these pin each step deterministically.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import radiodiff.bank.commit as commit
from radiodiff.bank import BankError, BankKey, Midpoint, MidpointBank, set_sealed, verify_bank
from radiodiff.bank.compact import compact_bank, export_bank
from radiodiff.bank.record import RECORD_NAME, content_digest, read_record

KEY = BankKey(model_hash="model-a", sampler_hash="ddim-5", t_mid=600)


class Killed(BaseException):
    """The writer's death: not an Exception, so no `except Exception` in its path stops it."""


def _midpoint(scene_id: int) -> Midpoint:
    rng = np.random.default_rng(scene_id)
    return Midpoint(scene_id, rng.standard_normal((3, 8, 8)).astype(np.float32), rng.random(8).astype(np.float32))


def _parts(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("part-*.parquet"))


def _kill_at(monkeypatch, name: str) -> None:
    """Kill the writer when it reaches `commit.<name>`, before the call."""

    def dying(*args, **kwargs):
        raise Killed(name)

    monkeypatch.setattr(commit, name, dying)


def _killed_put(root: Path, monkeypatch, step: str, scenes) -> None:
    """A put of `scenes` killed once its part is "announced" in the record, or "published"."""
    with monkeypatch.context() as patch:
        _kill_at(patch, {"announced": "write_part", "published": "_commit"}[step])
        with pytest.raises(Killed):
            MidpointBank(root, KEY).put([_midpoint(s) for s in scenes])


def test_a_put_killed_after_publishing_keeps_its_part_and_the_next_writer_commits_it(tmp_path, monkeypatch):
    root = tmp_path / "bank"
    MidpointBank(root, KEY).put([_midpoint(0)])
    _killed_put(root, monkeypatch, "published", [1, 2])
    record = read_record(root)
    orphan = next(iter(record.pending))
    assert orphan in _parts(root) and orphan not in record.parts  # the window: on disk, not yet listed
    assert verify_bank(root) == {"files": 2, "entries": 3}  # the announced part passes, whole
    assert MidpointBank(root, KEY).has(2)  # and is served
    with pytest.raises(BankError, match="cut short"):  # not digested half-settled
        content_digest(root)

    assert MidpointBank(root, KEY).put([_midpoint(1), _midpoint(3)]) == 1  # 1 is stored already
    record = read_record(root)
    assert not record.pending and orphan in record.parts and len(record.parts) == 3
    assert verify_bank(root) == {"files": 3, "entries": 4}
    assert MidpointBank(root, KEY).get(1).tobytes() == _midpoint(1).latent.tobytes()


def test_a_put_killed_before_publishing_leaves_no_part_and_is_undone(tmp_path, monkeypatch):
    root = tmp_path / "bank"
    MidpointBank(root, KEY).put([_midpoint(0)])
    _killed_put(root, monkeypatch, "announced", [1])
    assert read_record(root).pending and len(_parts(root)) == 1
    assert verify_bank(root) == {"files": 1, "entries": 1}
    assert not MidpointBank(root, KEY).has(1)

    set_sealed(root, True)  # any writer settles it: here the seal of a finished build
    record = read_record(root)
    assert not record.pending and record.sealed and list(record.parts) == _parts(root)
    assert content_digest(root)


def test_a_published_part_damaged_before_its_commit_is_named_then_removed(tmp_path, monkeypatch):
    root = tmp_path / "bank"
    MidpointBank(root, KEY).put([_midpoint(0)])
    _killed_put(root, monkeypatch, "published", [1])
    orphan = root / next(iter(read_record(root).pending))
    data = bytearray(orphan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    orphan.write_bytes(bytes(data))
    with pytest.raises(BankError, match=orphan.name):
        verify_bank(root)

    assert MidpointBank(root, KEY).put([_midpoint(1)]) == 1  # undone, so stored again
    assert not orphan.exists() and not read_record(root).pending
    assert verify_bank(root) == {"files": 2, "entries": 2}


@pytest.mark.parametrize("step", ["published", "one old part removed"])
def test_a_compaction_killed_midway_serves_each_entry_once_and_the_next_writer_finishes_it(
        tmp_path, monkeypatch, step):
    root = tmp_path / "bank"
    for scene in range(3):
        MidpointBank(root, KEY).put([_midpoint(scene)])
    old = _parts(root)
    with monkeypatch.context() as patch:
        if step == "published":
            _kill_at(patch, "_commit")
        else:
            real_unlink = Path.unlink

            def unlink_then_die(path, *args, **kwargs):
                real_unlink(path, *args, **kwargs)
                raise Killed(path.name)

            patch.setattr(Path, "unlink", unlink_then_die)
        with pytest.raises(Killed):
            compact_bank(root)
    merged = next(iter(read_record(root).pending))
    assert len(set(_parts(root)) - set(old)) == 1 and merged in _parts(root)
    assert verify_bank(root) == {"files": 1, "entries": 3}  # the merged part; the old ones set aside
    bank = MidpointBank(root, KEY)
    assert len(bank) == 3 and sorted(m.scene_id for m in bank) == [0, 1, 2]

    assert compact_bank(root) == {"before": 1, "after": 1, "entries": 3}  # settled first, then nothing to merge
    assert _parts(root) == [merged] and list(read_record(root).parts) == [merged]
    assert not read_record(root).pending


def test_an_export_settles_its_source_first(tmp_path, monkeypatch):
    root = tmp_path / "work"
    MidpointBank(root, KEY).put([_midpoint(0)])
    _killed_put(root, monkeypatch, "published", [1])
    assert export_bank(root, tmp_path / "out", [KEY]) == 2
    assert not read_record(root).pending
    assert verify_bank(tmp_path / "out") == {"files": 1, "entries": 2}


def test_a_file_copied_in_is_still_refused_after_a_writer_settles(tmp_path, monkeypatch):
    root, other = tmp_path / "bank", tmp_path / "other"
    MidpointBank(root, KEY).put([_midpoint(0)])
    MidpointBank(other, KEY).put([_midpoint(5)])
    (root / _parts(other)[0]).write_bytes((other / _parts(other)[0]).read_bytes())
    MidpointBank(root, KEY).put([_midpoint(1)])  # settles nothing: the copy was never announced
    with pytest.raises(BankError, match="not in bank.json"):
        verify_bank(root)


def test_a_record_written_before_pending_existed_still_reads(tmp_path):
    root = tmp_path / "bank"
    MidpointBank(root, KEY).put([_midpoint(0)])
    raw = json.loads((root / RECORD_NAME).read_text())
    del raw["pending"]
    raw["version"] = 1
    (root / RECORD_NAME).write_text(json.dumps(raw))
    assert verify_bank(root) == {"files": 1, "entries": 1}
    assert MidpointBank(root, KEY).put([_midpoint(1)]) == 1
    assert json.loads((root / RECORD_NAME).read_text())["version"] == 2


def test_verify_waits_for_a_write_in_progress(tmp_path, monkeypatch):
    """verify lists the part files and reads the record as one view: a write between the two
    would show a recorded part as missing (or a new one as copied in)."""
    import threading
    import time

    import radiodiff.bank.verify as verify

    root, events = tmp_path / "bank", []
    MidpointBank(root, KEY).put([_midpoint(0)])
    inside = threading.Event()
    real_write, real_commit, real_list = commit.write_part, commit._commit, verify.list_parts

    def slow_write(*args, **kwargs):
        path = real_write(*args, **kwargs)
        events.append("published")
        inside.set()
        time.sleep(0.5)  # room for a verify that does not wait to look now
        return path

    def committing(*args, **kwargs):
        real_commit(*args, **kwargs)
        events.append("committed")

    def listing(*args, **kwargs):
        events.append("verify lists")
        return real_list(*args, **kwargs)

    monkeypatch.setattr(commit, "write_part", slow_write)
    monkeypatch.setattr(commit, "_commit", committing)
    monkeypatch.setattr(verify, "list_parts", listing)
    writer = threading.Thread(target=lambda: MidpointBank(root, KEY).put([_midpoint(1)]))
    writer.start()
    assert inside.wait(10)
    result = {}
    checker = threading.Thread(target=lambda: result.update(verify_bank(root)))
    checker.start()
    writer.join(10)
    checker.join(10)
    assert events == ["published", "committed", "verify lists"] and result == {"files": 2, "entries": 2}
