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
    name = _part(bank_dir).name
    for scene in SCENES:
        latent = bank.get(scene)
        if latent is None:  # the part is quarantined, named with the reason, and the lookup misses
            assert name in bank.quarantined and name in bank.quarantined[name]
            assert "\n" not in bank.quarantined[name]
            continue
        # Damage confined to another row may leave this one readable, but then exactly as written.
        assert latent.tobytes() == originals[scene].tobytes()
    for read in (lambda: list(bank), lambda: bank.nearest(_midpoints()[2].embedding, 0.0)):
        result = read()  # iteration and nearest-neighbour reads check too, and skip what fails
        entries = result if isinstance(result, list) else [Midpoint(result[0], result[2], None)] if result else []
        assert all(e.latent.tobytes() == originals[e.scene_id].tobytes() for e in entries)
    assert name in bank.quarantined  # every damage here is found by one of the reads


def test_verify_exit_codes(tmp_path, bank_dir, capsys):
    assert _verify(bank_dir, capsys) == (0, "ok: 1 file, 4 entries\n")
    (tmp_path / "empty").mkdir()
    assert _verify(tmp_path / "empty", capsys) == (0, "ok: 0 files, 0 entries\n")
    (tmp_path / "models").mkdir()  # a folder of other files is no empty bank: a mistyped path says so
    (tmp_path / "models" / "vae.pt").write_bytes(b"weights")
    code, output = _verify(tmp_path / "models", capsys)
    assert code == 2
    _assert_one_error_line(output, str(tmp_path / "models"), "not a midpoint bank")
    assert main(["bank", "compact", str(tmp_path / "models")]) == 2  # and compact leaves no lock file there
    assert "not a midpoint bank" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["vae.pt"]
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
    assert fresh.get(12) is None and "checksum" in fresh.quarantined[middle.name]
    assert fresh.get(13) is None and list(fresh.quarantined) == [middle.name]  # its whole part is skipped


def _served(root) -> dict:
    """Everything a lookup of a fresh bank object on `root` serves: scene -> (latent bytes,
    embedding bytes) from `get`, iteration and `nearest`; damaged parts are skipped."""
    bank = MidpointBank(root, KEY)
    served = {}
    for scene in SCENES:
        latent = bank.get(scene)
        if latent is not None:
            served[("get", scene)] = latent.tobytes()
    for entry in bank:
        served[("iter", entry.scene_id)] = (entry.latent.tobytes(), entry.embedding.tobytes())
    for m in _midpoints():
        near = bank.nearest(m.embedding, 1.0)
        if near is not None:
            served[("nearest", m.scene_id)] = (near[0], near[2].tobytes())
    return served


@pytest.mark.slow
def test_every_single_byte_flip_is_harmless_or_caught_by_verify(tmp_path, capsys):
    """Flip each byte of a small bank's part file in turn. With the bank's record, verify names
    every flip (its whole-file sha256). Without the record (a bank from before records), verify
    reads every column with page checksums and every latent's sha256: whatever it then passes
    must serve exactly what was written (a flip in statistics or padding is harmless)."""
    root = tmp_path / "bank"
    bank = MidpointBank(root, KEY)
    bank.put(_midpoints()[:2])
    bank.put(_midpoints()[2:])
    clean = _served(root)
    record = (root / "bank.json").read_bytes()
    counts = {"tried": 0, "harmless": 0, "caught_by_content": 0, "caught_by_record_only": 0, "missed": 0}
    for path in sorted(root.glob("part-*.parquet")):
        original = path.read_bytes()
        for position in range(len(original)):
            damaged = bytearray(original)
            damaged[position] ^= 0xFF
            path.write_bytes(bytes(damaged))
            counts["tried"] += 1
            with pytest.raises(BankError, match=path.name):
                verify_bank(root)
            (root / "bank.json").unlink()
            try:
                verify_bank(root)
            except BankError as exc:
                assert path.name in str(exc) and "\n" not in str(exc)
                counts["caught_by_content"] += 1
            else:
                if _served(root) == clean:
                    counts["harmless"] += 1
                    counts["caught_by_record_only"] += 1
                else:
                    counts["missed"] += 1
            (root / "bank.json").write_bytes(record)
        path.write_bytes(original)
    with capsys.disabled():
        print(f"\nbank byte-flip sweep: {counts}")
    assert counts["missed"] == 0, counts
    assert counts["tried"] == counts["caught_by_content"] + counts["harmless"]
    assert verify_bank(root) == {"files": 2, "entries": 4} and _served(root) == clean


def test_a_part_overwritten_by_a_copy_of_another_is_caught(tmp_path):
    root = tmp_path / "bank"
    bank = MidpointBank(root, KEY)
    bank.put(_midpoints()[:2])
    bank.put([Midpoint(10 + m.scene_id, m.latent, m.embedding) for m in _midpoints()[:2]])
    first, second = sorted(root.glob("part-*.parquet"))
    shutil.copy(first, second)
    with pytest.raises(BankError, match="stored twice") as refused:
        verify_bank(root)
    assert second.name in str(refused.value)
    (root / "bank.json").unlink()  # without the record, the repeated keys still give it away
    with pytest.raises(BankError, match="stored twice"):
        verify_bank(root)


def test_the_part_set_must_match_the_record(tmp_path):
    root = tmp_path / "bank"
    bank = MidpointBank(root, KEY)
    bank.put(_midpoints()[:2])
    bank.put(_midpoints()[2:])
    first, _ = sorted(root.glob("part-*.parquet"))
    first.unlink()
    with pytest.raises(BankError, match="listed in bank.json .* but missing"):
        verify_bank(root)


def _put_all(root: str, barrier) -> int:
    barrier.wait()  # every process misses the same scenes at the same moment
    return MidpointBank(root, KEY).put(_midpoints())


def test_concurrent_writers_store_each_key_once(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    writers = 4
    barrier = context.Manager().Barrier(writers)
    with context.Pool(writers) as pool:
        written = pool.starmap(_put_all, [(str(tmp_path / "bank"), barrier)] * writers)
    assert sorted(written) == [0] * (writers - 1) + [len(SCENES)]
    assert verify_bank(tmp_path / "bank") == {"files": 1, "entries": len(SCENES)}


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
    with pytest.raises(BankError, match="not in bank.json"):  # intact, but not a file this bank wrote
        verify_bank(mine)


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
    assert bank.get(1) is None
    message = bank.quarantined[path.name]
    assert str(path) in message and reason in message and "not by this bank's key" in message
    assert "\n" not in message
    assert MidpointBank(bank_dir, KEY).get(1) is None  # a fresh index sees other keys only

