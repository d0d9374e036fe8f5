"""Bank integrity on disk: damaged, truncated, foreign or mis-keyed files are refused, never served.

`tests/test_bank.py` covers the library-level checks one by one; this file injects damage
the way it happens to a shared bank (bytes flipped in place, files cut short, files copied in
from another model) and checks what a user sees: one `error:` line naming the file and the
reason from `radiodiff bank verify` (exit 2), and never a wrong latent from a lookup.
"""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from radiodiff.bank import BankError, BankKey, Midpoint, MidpointBank, verify_bank
from radiodiff.bank.schema import VERSION_KEY
from radiodiff.cli import main

KEY = BankKey(model_hash="model-a", sampler_hash="ddim-5", t_mid=600)
SCENES = range(4)


def _midpoints(seed: int = 0) -> list[Midpoint]:
    rng = np.random.default_rng(seed)
    return [Midpoint(s, rng.standard_normal((3, 8, 8)).astype(np.float32), rng.random(64).astype(np.float32))
            for s in SCENES]


@pytest.fixture
def bank_dir(tmp_path):
    """A bank of one part file holding `_midpoints()` under KEY."""
    root = tmp_path / "bank"
    MidpointBank(root, KEY).put(_midpoints())
    return root


def _part(root):
    (path,) = sorted(root.glob("part-*.parquet"))
    return path


def _verify(root, capsys) -> tuple[int, str]:
    code = main(["bank", "verify", str(root)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _assert_one_error_line(output: str, *fragments: str) -> None:
    assert output.startswith("error: ") and output.count("\n") == 1, output
    for fragment in fragments:
        assert fragment in output, (fragment, output)


def _rewrite(path, change) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def _set(table: pa.Table, name: str, values) -> pa.Table:
    index = table.schema.get_field_index(name)
    field = table.schema.field(index)
    return table.set_column(index, field, pa.array(values, field.type))


def _flip_latent_byte(table: pa.Table) -> pa.Table:
    latents = table["latent"].to_pylist()
    latents[2] = latents[2][:17] + bytes([latents[2][17] ^ 0x20]) + latents[2][18:]
    return _set(table, "latent", latents)


DAMAGE = {
    # name: (how the file is damaged, what the error must say)
    "flipped-latent-byte": (lambda p: _rewrite(p, _flip_latent_byte), "checksum mismatch for scene 2"),
    "wrong-checksum": (lambda p: _rewrite(p, lambda t: _set(t, "checksum", ["f" * 64] * t.num_rows)), "checksum"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "cannot read"),
    "cut-footer": (lambda p: p.write_bytes(p.read_bytes()[:-9]), "cannot read"),
    "empty-file": (lambda p: p.write_bytes(b""), "cannot read"),
    "garbage": (lambda p: p.write_bytes(b"PAR1" + bytes(range(256)) * 8 + b"PAR1"), "cannot read"),
    "schema-version-2": (lambda p: _rewrite(p, lambda t: t.replace_schema_metadata({VERSION_KEY: b"2"})),
                         "bank schema version '2'"),
    "no-schema-version": (lambda p: _rewrite(p, lambda t: t.replace_schema_metadata({})), "no bank schema version"),
    "dropped-column": (lambda p: _rewrite(p, lambda t: t.drop_columns(["checksum"])), "'checksum' is missing"),
    "retyped-column": (lambda p: _rewrite(p, lambda t: t.set_column(t.schema.get_field_index("t_mid"), "t_mid",
                                                                    t["t_mid"].cast(pa.float32()))), "'t_mid' has type"),
    "object-dtype": (lambda p: _rewrite(p, lambda t: _set(t, "dtype", ["object"] * t.num_rows)), "unsupported latent dtype"),
    "shape-too-big": (lambda p: _rewrite(p, lambda t: _set(t, "shape", [[3, 8, 9]] * t.num_rows)), "needs"),
    "negative-shape": (lambda p: _rewrite(p, lambda t: _set(t, "shape", [[-3, -8, 8]] * t.num_rows)), "negative"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_verify_names_the_file_and_the_reason_in_one_line(bank_dir, capsys, damage):
    make, reason = DAMAGE[damage]
    path = _part(bank_dir)
    make(path)
    code, output = _verify(bank_dir, capsys)
    assert code == 2
    _assert_one_error_line(output, str(path), reason)


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_lookups_refuse_damage_instead_of_serving_it(bank_dir, damage):
    make, _ = DAMAGE[damage]
    make(_part(bank_dir))
    bank = MidpointBank(bank_dir, KEY)
    originals = {m.scene_id: m.latent for m in _midpoints()}
    for scene in SCENES:
        try:
            latent = bank.get(scene)
        except BankError as exc:
            assert _part(bank_dir).name in str(exc) and "\n" not in str(exc)
            continue
        # Damage confined to another row may leave this one readable, but then exactly as written.
        assert latent is not None and latent.tobytes() == originals[scene].tobytes()
    for read in (lambda: list(bank), lambda: bank.nearest(_midpoints()[2].embedding, 0.0)):
        try:
            result = read()
        except BankError as exc:  # iteration and nearest-neighbour reads verify checksums too
            assert _part(bank_dir).name in str(exc)
            continue
        entries = result if isinstance(result, list) else [Midpoint(result[0], result[2], None)] if result else []
        assert all(e.latent.tobytes() == originals[e.scene_id].tobytes() for e in entries)


def test_verify_exit_codes(tmp_path, bank_dir, capsys):
    assert _verify(bank_dir, capsys) == (0, "ok: 1 file, 4 entries\n")
    (tmp_path / "empty").mkdir()
    assert _verify(tmp_path / "empty", capsys) == (0, "ok: 0 files, 0 entries\n")
    code, output = _verify(tmp_path / "absent", capsys)
    assert code == 2
    _assert_one_error_line(output, str(tmp_path / "absent"), "no such midpoint bank")
    code, output = _verify(_part(bank_dir), capsys)  # a file, not a bank folder
    assert code == 2
    _assert_one_error_line(output, "must be a directory")
    with pytest.raises(SystemExit) as usage:
        main(["bank", "verify"])
    assert usage.value.code == 2
    assert "PATH" in capsys.readouterr().err


def test_verify_reports_the_damaged_file_among_good_ones(bank_dir, capsys):
    bank = MidpointBank(bank_dir, KEY)
    bank.put([Midpoint(10 + m.scene_id, m.latent, m.embedding) for m in _midpoints(1)])
    bank.put([Midpoint(20 + m.scene_id, m.latent, m.embedding) for m in _midpoints(2)])
    first, middle, last = sorted(bank_dir.glob("part-*.parquet"))
    _rewrite(middle, _flip_latent_byte)
    code, output = _verify(bank_dir, capsys)
    assert code == 2
    _assert_one_error_line(output, middle.name, "checksum mismatch for scene 12")
    assert first.name not in output and last.name not in output
    fresh = MidpointBank(bank_dir, KEY)
    assert fresh.get(0) is not None and fresh.get(23) is not None  # the good files still serve
    with pytest.raises(BankError, match="checksum"):
        fresh.get(12)


def test_bytes_flipped_in_place_never_serve_a_wrong_latent(bank_dir):
    """Flip one bit at 160 spread positions of the raw file (data pages, footer, magic bytes):
    each lookup raises a BankError naming the file, misses, or returns the exact latent.
    Page CRCs catch flips in every column; the footer's own checks catch most of the rest."""
    path = _part(bank_dir)
    original = path.read_bytes()
    originals = {m.scene_id: m for m in _midpoints()}
    latents = {scene: m.latent.tobytes() for scene, m in originals.items()}
    positions = sorted(set(np.linspace(0, len(original) - 1, 160).astype(int).tolist()))
    outcomes = {"refused": 0, "intact": 0}
    for position in positions:
        damaged = bytearray(original)
        damaged[position] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            bank = MidpointBank(bank_dir, KEY)
            served = {scene: bank.get(scene) for scene in SCENES}
            listed = list(bank)
        except BankError as exc:
            assert path.name in str(exc) and "\n" not in str(exc)
            outcomes["refused"] += 1
            continue
        for scene, latent in served.items():
            assert latent is None or latent.tobytes() == latents[scene], f"flip at byte {position}"
        for entry in listed:
            want = originals.get(entry.scene_id, None)
            assert want is not None and entry.latent.tobytes() == want.latent.tobytes(), f"flip at byte {position}"
            assert np.array_equal(entry.embedding, want.embedding), f"flip at byte {position}"
        outcomes["intact"] += 1
    assert outcomes["refused"] >= 0.7 * len(positions)  # most bytes of a bank file are latent data
    path.write_bytes(original)
    assert verify_bank(bank_dir) == {"files": 1, "entries": 4}


@pytest.mark.parametrize("other", [
    BankKey(model_hash="model-b", sampler_hash="ddim-5", t_mid=600),  # another checkpoint
    BankKey(model_hash="model-a", sampler_hash="ddim-20", t_mid=600),  # another schedule
    BankKey(model_hash="model-a", sampler_hash="ddim-5", t_mid=400),  # another midpoint time
])
def test_latents_copied_in_from_another_model_are_never_served(tmp_path, other):
    foreign = tmp_path / "foreign"
    MidpointBank(foreign, other).put(_midpoints(seed=5))
    mine = tmp_path / "mine"
    MidpointBank(mine, KEY).put(_midpoints()[:2])
    shutil.copy(_part(foreign), mine)  # a user merges banks from two machines
    bank = MidpointBank(mine, KEY)
    assert len(bank) == 2 and bank.get(2) is None and bank.get(3) is None
    assert bank.get(0).tobytes() == _midpoints()[0].latent.tobytes()
    assert all(m.scene_id in (0, 1) for m in bank)
    assert bank.nearest(_midpoints(seed=5)[3].embedding, 10.0)[0] in (0, 1)
    assert verify_bank(mine) == {"files": 2, "entries": 6}  # both files are intact, just other keys


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("model_hash", "model-b", "made by model model-b"),
    ("sampler_hash", "ddim-20", "sampler ddim-20"),
    ("t_mid", 400.0, "t_mid 400.0"),
])
def test_rows_relabelled_under_an_open_bank_are_refused(bank_dir, column, value, reason):
    """A part file replaced by one with other key columns, after this bank indexed it."""
    bank = MidpointBank(bank_dir, KEY)
    assert len(bank) == 4
    path = _part(bank_dir)
    _rewrite(path, lambda t: _set(t, column, [value] * t.num_rows))
    with pytest.raises(BankError) as refused:
        bank.get(1)
    message = str(refused.value)
    assert str(path) in message and reason in message and "not by this bank's key" in message
    assert "\n" not in message
    assert MidpointBank(bank_dir, KEY).get(1) is None  # a fresh index sees other keys only

