"""The midpoint bank: exact round trips, key isolation, append-only files, integrity checks."""

from __future__ import annotations

import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from radiodiff.bank import (
    EMBEDDING_DIM,
    BankError,
    BankKey,
    Midpoint,
    MidpointBank,
    layout_embedding,
    verify_bank,
)
from radiodiff.bank.schema import VERSION_KEY
from radiodiff.cli import main

KEY = BankKey(model_hash="model-a", sampler_hash="ddim-50", t_mid=600)


def _midpoint(scene_id, *, cell=-1, seed=0, shape=(3, 16, 16), dtype=np.float32, dim=8, value=None):
    """A midpoint whose latent and embedding are fixed by (scene, cell, seed) or by `value`."""
    rng = np.random.default_rng([scene_id, cell + 1, seed])
    latent = rng.standard_normal(shape).astype(dtype) if value is None else np.full(shape, value, dtype)
    return Midpoint(scene_id, latent, rng.random(dim).astype(np.float32), cell=cell, seed=seed)


def _parts(root):
    return sorted(root.glob("part-*.parquet"))


def _rewrite(path, change):
    """Replace part file `path` by `change(table)`, written as the bank would (schema kept)."""
    table = change(pq.read_table(path))
    pq.write_table(table, path, row_group_size=256)


def _replace_column(table, name, values):
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_round_trip_keeps_bytes_shape_dtype(tmp_path, dtype):
    stored = [_midpoint(s, dtype=dtype) for s in range(3)]
    MidpointBank(tmp_path / "bank", KEY).put(stored)
    latent = MidpointBank(tmp_path / "bank", KEY).get(1)
    assert latent.dtype == dtype and latent.shape == (3, 16, 16)
    assert latent.tobytes() == stored[1].latent.tobytes()
    latent += 1  # a returned latent is the caller's own copy
    assert MidpointBank(tmp_path / "bank", KEY).get(1).tobytes() == stored[1].latent.tobytes()


def test_big_endian_input_comes_back_native(tmp_path):
    latent = np.arange(12, dtype=">f4").reshape(3, 2, 2)
    bank = MidpointBank(tmp_path, KEY)
    bank.put([Midpoint(0, latent, np.zeros(4))])
    back = bank.get(0)
    assert back.dtype == np.float32 and back.dtype.isnative
    np.testing.assert_array_equal(back, latent)


def test_each_put_appends_one_file_and_never_rewrites(tmp_path):
    bank = MidpointBank(tmp_path, KEY)
    assert bank.put([_midpoint(0), _midpoint(1)]) == 2
    (first,) = _parts(tmp_path)
    before = first.read_bytes()
    assert bank.put([_midpoint(2)]) == 1
    assert len(_parts(tmp_path)) == 2
    assert first.read_bytes() == before
    assert len(bank) == 3


def test_put_is_idempotent(tmp_path):
    bank = MidpointBank(tmp_path, KEY)
    assert bank.put([_midpoint(0), _midpoint(1)]) == 2
    assert bank.put([_midpoint(0, value=7.0), _midpoint(1)]) == 0
    assert len(_parts(tmp_path)) == 1
    assert bank.put([_midpoint(1), _midpoint(2), _midpoint(0, cell=4), _midpoint(0, seed=9)]) == 3
    assert len(bank) == 5
    assert bank.get(0).tobytes() == _midpoint(0).latent.tobytes()


def test_duplicates_within_one_put_keep_the_first(tmp_path):
    bank = MidpointBank(tmp_path, KEY)
    assert bank.put([_midpoint(5, value=1.0), _midpoint(5, value=2.0)]) == 1
    assert (bank.get(5) == 1.0).all()


@pytest.mark.parametrize(
    "other",
    [
        BankKey(model_hash="model-b", sampler_hash="ddim-50", t_mid=600),
        BankKey(model_hash="model-a", sampler_hash="ddim-20", t_mid=600),
        BankKey(model_hash="model-a", sampler_hash="ddim-50", t_mid=600.0000001),
    ],
)
def test_other_key_gets_nothing(tmp_path, other):
    MidpointBank(tmp_path, KEY).put([_midpoint(0)])
    bank = MidpointBank(tmp_path, other)
    assert bank.get(0) is None
    assert bank.nearest(_midpoint(0).embedding, 1.0) is None
    assert len(bank) == 0 and list(bank) == []


def test_integer_and_float_t_mid_are_one_key(tmp_path):
    MidpointBank(tmp_path, KEY).put([_midpoint(0)])
    same = BankKey(model_hash="model-a", sampler_hash="ddim-50", t_mid=600.0)
    assert MidpointBank(tmp_path, same).get(0) is not None


def test_keys_sharing_a_directory_stay_apart(tmp_path):
    other = BankKey(model_hash="model-b", sampler_hash="ddim-50", t_mid=600)
    mine, theirs = MidpointBank(tmp_path, KEY), MidpointBank(tmp_path, other)
    mine.put([_midpoint(0, value=1.0)])
    theirs.put([_midpoint(0, value=2.0), _midpoint(1, value=2.0)])
    assert (mine.get(0) == 1.0).all() and (theirs.get(0) == 2.0).all()
    assert mine.get(1) is None
    assert [(m.scene_id, float(m.latent.flat[0])) for m in mine] == [(0, 1.0)]
    assert len(theirs) == 2 and len(_parts(tmp_path)) == 2
    scene, _, latent = mine.nearest(_midpoint(1).embedding, 10.0)
    assert scene == 0 and (latent == 1.0).all()


def test_iteration_yields_entries_with_embeddings(tmp_path):
    stored = [_midpoint(s, cell=s % 2) for s in range(5)]
    bank = MidpointBank(tmp_path, KEY)
    bank.put(stored[:3])
    bank.put(stored[3:])
    for got, want in zip(bank, stored, strict=True):
        assert (got.scene_id, got.cell, got.seed) == (want.scene_id, want.cell, want.seed)
        assert got.latent.tobytes() == want.latent.tobytes()
        np.testing.assert_array_equal(got.embedding, want.embedding)


def test_nearest_picks_closest_within_bound(tmp_path):
    bank = MidpointBank(tmp_path, KEY)
    base = np.zeros(4, np.float32)
    bank.put([Midpoint(s, np.full((1, 2, 2), s, np.float32), base + s) for s in (0, 1, 3)])
    bank.put([Midpoint(9, np.zeros((1, 2, 2), np.float32), base + 2.1, cell=5)])  # other cell: not a candidate
    scene, distance, latent = bank.nearest(base + 2.2, 1.0)
    assert scene == 3 and distance == pytest.approx(0.8, abs=1e-6)  # RMS difference, not the L2 norm
    assert (latent == 3).all()
    assert bank.nearest(base + 2.2, 0.79) is None
    assert bank.nearest(base + 2.2, 0.2, cell=5)[0] == 9
    assert bank.nearest(base, 1.0, seed=1) is None
    with pytest.raises(ValueError, match="4"):
        bank.nearest(np.zeros(5), 1.0)


def test_get_or_compute_computes_once_and_inserts(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.full((3, 4, 4), len(calls), np.float32)

    bank = MidpointBank(tmp_path, KEY)
    results = [bank.get_or_compute(s, np.zeros(8), compute) for s in (0, 1, 0, 1, 0)]
    assert [hit for _, hit in results] == [False, False, True, True, True]
    assert len(calls) == 2
    assert (results[4][0] == 1).all() and (results[3][0] == 2).all()
    assert (MidpointBank(tmp_path, KEY).get(1) == 2).all()


def test_second_bank_object_sees_puts(tmp_path):
    reader, writer = MidpointBank(tmp_path / "b", KEY), MidpointBank(tmp_path / "b", KEY)
    assert reader.get(0) is None and len(reader) == 0
    writer.put([_midpoint(0)])
    assert reader.get(0) is not None
    writer.put([_midpoint(1)])
    assert len(reader) == 2
    assert reader.put([_midpoint(1)]) == 0


def test_flipped_latent_byte_fails_checksum(tmp_path):
    bank = MidpointBank(tmp_path, KEY)
    bank.put([_midpoint(0), _midpoint(1)])
    (path,) = _parts(tmp_path)

    def tamper(table):
        latents = table["latent"].to_pylist()
        latents[1] = bytes([latents[1][0] ^ 0x01]) + latents[1][1:]
        return _replace_column(table, "latent", latents)

    _rewrite(path, tamper)
    assert bank.get(0) is not None
    assert bank.get(1) is None  # the damaged part is quarantined: a miss, never a wrong latent
    assert "checksum mismatch for scene 1" in bank.quarantined[path.name]
    with pytest.raises(BankError, match="checksum"):
        verify_bank(tmp_path)


def test_rows_of_another_key_rejected_on_read(tmp_path):
    bank = MidpointBank(tmp_path, KEY)
    bank.put([_midpoint(0)])
    assert len(bank) == 1  # index built before the file changes under it
    (path,) = _parts(tmp_path)
    _rewrite(path, lambda t: _replace_column(t, "model_hash", ["model-x"]))
    assert bank.get(0) is None and "model-x" in bank.quarantined[path.name]


def test_truncated_file_names_the_file(tmp_path):
    MidpointBank(tmp_path, KEY).put([_midpoint(0)])
    (path,) = _parts(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    bank = MidpointBank(tmp_path, KEY)
    assert bank.get(0) is None and str(path) in bank.quarantined[path.name]
    with pytest.raises(BankError, match=path.name):
        verify_bank(tmp_path)


def test_foreign_parquet_file_is_rejected(tmp_path):
    MidpointBank(tmp_path, KEY).put([_midpoint(0)])
    pq.write_table(pa.table({"scene_id": [0], "latent": [b"x"]}), tmp_path / "other.parquet")
    bank = MidpointBank(tmp_path, KEY)
    assert bank.get(0) is not None  # the bank's own part still serves
    assert "schema version" in bank.quarantined["other.parquet"]
    with pytest.raises(BankError, match="other.parquet"):
        verify_bank(tmp_path)


@pytest.mark.parametrize("version", [b"2", None])
def test_wrong_or_missing_schema_version_is_rejected(tmp_path, version):
    MidpointBank(tmp_path, KEY).put([_midpoint(0)])
    (path,) = _parts(tmp_path)
    metadata = {VERSION_KEY: version} if version else {}
    _rewrite(path, lambda t: t.replace_schema_metadata(metadata))
    bank = MidpointBank(tmp_path, KEY)
    assert bank.get(0) is None and "schema version" in bank.quarantined[path.name]


def test_stray_temporary_file_is_ignored(tmp_path):
    (tmp_path / ".part-x.parquet.tmp").write_bytes(b"half a file")
    (tmp_path / ".part-y.parquet").write_bytes(b"half a file")
    bank = MidpointBank(tmp_path, KEY)
    bank.put([_midpoint(0)])
    assert bank.get(0) is not None
    assert verify_bank(tmp_path) == {"files": 1, "entries": 1}


def test_lookup_reads_one_row_group(tmp_path, monkeypatch):
    bank = MidpointBank(tmp_path, KEY)
    for start in range(0, 20_000, 5_000):
        batch = [Midpoint(s, np.full((1, 2, 2), s, np.float32), np.zeros(4)) for s in range(start, start + 5_000)]
        assert bank.put(batch) == 5_000
    fresh = MidpointBank(tmp_path, KEY)
    assert len(fresh) == 20_000  # builds the index before counting

    row_groups, whole_reads = [], []
    read_row_group = pq.ParquetFile.read_row_group

    def counting(self, i, *args, **kwargs):
        table = read_row_group(self, i, *args, **kwargs)
        row_groups.append(table.num_rows)
        return table

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
    for name in ("read", "read_row_groups", "iter_batches"):
        monkeypatch.setattr(pq.ParquetFile, name, lambda *a, _n=name, **k: whole_reads.append(_n))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: whole_reads.append("read_table"))
    latent = fresh.get(12_345)
    assert (latent == 12_345).all()
    assert len(row_groups) == 1 and row_groups[0] <= 256
    assert whole_reads == []


def test_cli_verify_ok_and_error(tmp_path, capsys):
    bank = MidpointBank(tmp_path, KEY)
    bank.put([_midpoint(0), _midpoint(1)])
    bank.put([_midpoint(2)])
    assert main(["bank", "verify", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 2 files, 3 entries"
    path = _parts(tmp_path)[0]
    _rewrite(path, lambda t: _replace_column(t, "checksum", ["0" * 64] * t.num_rows))
    assert main(["bank", "verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "checksum" in err and path.name in err
    assert main(["bank", "verify", str(tmp_path / "missing")]) == 2
    assert "no such" in capsys.readouterr().err


def test_layout_embedding_is_cell_occupancy():
    buildings = np.zeros((64, 32), dtype=np.uint8)
    buildings[:8, :4] = 1  # all of cell (0, 0)
    buildings[8:12, 4:8] = 1  # half of cell (1, 1)
    embedding = layout_embedding(buildings)
    assert embedding.shape == (EMBEDDING_DIM,) and embedding.dtype == np.float32
    expected = np.zeros(64, np.float32)
    expected[0], expected[9] = 1.0, 0.5
    np.testing.assert_array_equal(embedding, expected)
    np.testing.assert_array_equal(layout_embedding(torch.from_numpy(buildings).bool()), expected)


@pytest.mark.parametrize("bad", [np.zeros((60, 64)), np.zeros((64,)), np.full((64, 64), 255)])
def test_layout_embedding_rejects_bad_layouts(bad):
    with pytest.raises(ValueError):
        layout_embedding(bad)


def test_has_and_nearest_exclude(tmp_path):
    bank = MidpointBank(tmp_path, BankKey("m", "s", 600.0))
    near, far = np.zeros(64, np.float32), np.full(64, 0.5, np.float32)
    bank.put([Midpoint(1, np.ones((1, 2, 2), np.float32), near), Midpoint(2, np.zeros((1, 2, 2), np.float32), far)])
    assert bank.has(1) and not bank.has(3) and not bank.has(1, seed=1)
    assert bank.nearest(near, 1.0)[0] == 1
    scene, distance, _ = bank.nearest(near, 1.0, exclude={1})
    assert scene == 2 and distance == pytest.approx(0.5)
    assert bank.nearest(near, 1.0, exclude=[1, 2]) is None


def test_a_sealed_bank_refuses_puts_and_a_serving_bank_stores_beside_it(tmp_path):
    from radiodiff.bank import ServingBank, is_sealed, set_sealed
    from radiodiff.bank.serving import default_serving_dir, open_bank

    built = tmp_path / "bank"
    MidpointBank(built, KEY).put([_midpoint(0)])
    set_sealed(built, True)
    assert is_sealed(built)
    before = {p.name: p.read_bytes() for p in built.iterdir()}
    with pytest.raises(BankError, match="sealed"):
        MidpointBank(built, KEY).put([_midpoint(1)])
    served = open_bank(built, KEY)
    assert isinstance(served, ServingBank) and served.root == default_serving_dir(built) == tmp_path / "bank-serving"
    assert served.put([_midpoint(0), _midpoint(1)]) == 1  # scene 0 is in the built bank already
    assert served.get(0).tobytes() == _midpoint(0).latent.tobytes()
    assert served.get(1).tobytes() == _midpoint(1).latent.tobytes() and len(served) == 2
    assert served.nearest(_midpoint(1).embedding, 0.0)[0] == 1
    assert {p.name: p.read_bytes() for p in built.iterdir()} == before  # the built bank is untouched
    set_sealed(built, False)
    assert isinstance(open_bank(built, KEY), MidpointBank) and MidpointBank(built, KEY).put([_midpoint(2)]) == 1


def test_compact_merges_parts_atomically_and_verifies(tmp_path, capsys):
    bank = MidpointBank(tmp_path, KEY)
    for scene in range(3):
        bank.put([_midpoint(scene)])
    MidpointBank(tmp_path, BankKey(model_hash="m2", sampler_hash="s2", t_mid=400)).put([_midpoint(9)])
    assert main(["bank", "compact", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"compacted {tmp_path}: 4 -> 1 part(s), 4 entries"
    assert len(_parts(tmp_path)) == 1 and verify_bank(tmp_path) == {"files": 1, "entries": 4}
    reader = MidpointBank(tmp_path, KEY)
    assert all(reader.get(s).tobytes() == _midpoint(s).latent.tobytes() for s in range(3))
    assert main(["bank", "stats", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{tmp_path}: 1 part, 4 entries,") and "open, 0 problems" in lines[0]
    assert sorted(lines[1:]) == ["  model m2 sampler s2 t_mid 400: 1 entry",
                                 f"  model {KEY.model_hash} sampler {KEY.sampler_hash} t_mid 600: 3 entries"]


def test_compact_refuses_a_damaged_bank_and_changes_nothing(tmp_path, capsys):
    bank = MidpointBank(tmp_path, KEY)
    bank.put([_midpoint(0)])
    bank.put([_midpoint(1)])
    first = _parts(tmp_path)[0]
    _rewrite(first, lambda t: _replace_column(t, "checksum", ["0" * 64]))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert main(["bank", "compact", str(tmp_path)]) == 2
    assert "checksum" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_compact_refuses_a_sealed_bank_and_a_missing_one(tmp_path, capsys):
    from radiodiff.bank import set_sealed

    bank = MidpointBank(tmp_path / "bank", KEY)
    bank.put([_midpoint(0)])
    bank.put([_midpoint(1)])
    set_sealed(tmp_path / "bank", True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "bank").iterdir()}
    assert main(["bank", "compact", str(tmp_path / "bank")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "sealed" in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in (tmp_path / "bank").iterdir()} == before
    assert main(["bank", "compact", str(tmp_path / "nowhere")]) == 2
    assert "no such midpoint bank" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_between_a_part_and_its_record_line_waits_for_the_record(tmp_path, monkeypatch, signum):
    """Ctrl-C (or a polite kill) that lands just after a part file is published: the put still
    lists it in the record, then the signal reaches its handler, and the bank verifies."""
    import radiodiff.bank.commit as commit

    publish = commit.write_part

    def publish_then_signal(root, table, name):
        path = publish(root, table, name)
        signal.raise_signal(signum)  # the worst moment: the part is there, its record line is not
        return path

    class Stopped(Exception):
        pass

    def stop(number, frame):
        raise Stopped(number)

    bank = MidpointBank(tmp_path, KEY)
    bank.put([_midpoint(0)])
    monkeypatch.setattr(commit, "write_part", publish_then_signal)
    previous = signal.signal(signum, stop)
    try:
        with pytest.raises(Stopped):  # the handler still runs: the signal is held, not swallowed
            bank.put([_midpoint(1)])
    finally:
        signal.signal(signum, previous)
    assert verify_bank(tmp_path) == {"files": 2, "entries": 2}  # the part has its record line
    assert MidpointBank(tmp_path, KEY).has(1)


def test_a_held_ctrl_c_still_interrupts_once_the_body_is_done():
    from radiodiff.io import signals_deferred

    # Python's own Ctrl-C handler, set here: a suite started as a background job (`make test &`,
    # some CI runners) inherits SIGINT ignored, and then Python installs none.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                signal.raise_signal(signal.SIGINT)
                finished = True
        assert finished and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_ctrl_c_stays_ignored():
    from radiodiff.io import signals_deferred

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals_deferred():
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_held_signal_is_handed_to_its_handler_directly_not_left_pending():
    # Left pending, a Python handler runs at the interpreter's next check, where a finalizer that
    # happens to run swallows what it raises; so the deferral calls the handler itself.
    from radiodiff.io import signals_deferred

    frames = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: frames.append(frame.f_code.co_name))
    try:
        with signals_deferred((signal.SIGUSR1,)):
            signal.raise_signal(signal.SIGUSR1)
            assert frames == []  # held
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert frames == ["_deliver"]
