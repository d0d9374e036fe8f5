"""`radiodiff predict --queries`: many queries from one process, each answered as a single query is."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from radiodiff.cli import main
from tests.served import TX_POSITIONS, cli_args, served_folder, write_queries

QUERIES = [("a", TX_POSITIONS[0]), ("b", TX_POSITIONS[0]), ("a", TX_POSITIONS[7]), ("a_near", TX_POSITIONS[0])]


@pytest.fixture(scope="module")
def served(tmp_path_factory, ldm_file):
    root = served_folder(tmp_path_factory.mktemp("batch"), ldm_file[0].parent)
    return root, ldm_file[0].parent


def test_batch_maps_equal_single_query_maps(served, tmp_path):
    root, models = served
    queries = write_queries(root / "four.jsonl", QUERIES)
    assert main(cli_args(root, models, "--queries", str(queries), "--out", str(tmp_path / "maps"))) == 0
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [f"0000{i}.png" for i in range(4)]
    for i, (name, tx) in enumerate(QUERIES):
        single = tmp_path / f"single{i}.png"
        args = cli_args(root, models, "--buildings", str(root / "layouts" / f"{name}.png"),
                        "--tx", *map(str, tx), "--out", str(single))
        assert main(args) == 0
        assert (tmp_path / "maps" / f"0000{i}.png").read_bytes() == single.read_bytes(), i


def test_batch_with_a_bank_stores_misses_for_the_queries_after_them(served, tmp_path, capsys):
    root, models = served
    queries = write_queries(root / "four.jsonl", QUERIES)
    bank = tmp_path / "bank"
    args = cli_args(root, models, "--queries", str(queries), "--out", str(tmp_path / "maps"), "--bank", str(bank))
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"wrote 4 maps to {re.escape(str(tmp_path / 'maps'))} \(32x32, 1 sample, "
                        r"bank: 1 hit, 1 nearest, 2 miss, tail: plain, median \d+ ms/map on cpu\)", line), line
    assert main(args) == 0  # a warm bank: the same file again is all hits, a_near still nearest
    assert "bank: 3 hit, 1 nearest, 0 miss" in capsys.readouterr().out
    assert len(list(bank.glob("*.parquet"))) == 2  # one part per miss


@pytest.mark.parametrize("line, reason", [
    ("{not json", "not valid JSON"),
    (json.dumps(["layouts/a.png", [8, 8]]), "expected a JSON object"),
    (json.dumps({"buildings": "layouts/a.png", "tx": [8, 8], "power": 3}), "unknown key"),
    (json.dumps({"buildings": "layouts/a.png"}), "needs 'buildings'"),
    (json.dumps({"buildings": "layouts/a.png", "tx": [8.5, 8]}), "'tx' must be"),
    (json.dumps({"buildings": "layouts/a.png", "tx": [True, 8]}), "'tx' must be"),
    (json.dumps({"buildings": 3, "tx": [8, 8]}), "'buildings' must be"),
    (json.dumps({"buildings": "layouts/none.png", "tx": [8, 8]}), "file not found"),
    (json.dumps({"buildings": "layouts/a.png", "tx": [60, 60]}), "inside a building"),
    (json.dumps({"buildings": "layouts/a.png", "tx": [8, 300]}), "outside"),
], ids=["json", "array", "unknown-key", "no-tx", "float-tx", "bool-tx", "path-type", "missing-png", "tx-in-building",
        "tx-outside"])
def test_a_bad_line_fails_with_its_number_before_any_map(served, tmp_path, capsys, line, reason):
    root, models = served
    queries = root / "bad.jsonl"
    queries.write_text(json.dumps({"buildings": "layouts/a.png", "tx": [8, 8]}) + "\n\n" + line + "\n")
    out = tmp_path / "maps"
    assert main(cli_args(root, models, "--queries", str(queries), "--out", str(out))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {queries} line 3: ") and reason in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("extra, reason", [
    (["--tx", "8", "8"], "drop --tx"),
    (["--uncertainty", "std.png", "--samples", "2"], "drop --uncertainty"),
    (["--out", "FILE"], "is a file"),
    (["--out", "FILE/maps"], "FILE is a file, not a folder"),
], ids=["tx", "uncertainty", "out-is-a-file", "out-parent-is-a-file"])
def test_flag_mistakes_of_batch_mode(served, tmp_path, capsys, monkeypatch, extra, reason):
    root, models = served
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("")
    queries = write_queries(tmp_path / "q.jsonl", QUERIES[:1])
    args = cli_args(root, models, "--queries", str(queries), "--out", "maps", *extra)
    assert main(args) == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "maps").exists()


def test_single_mode_needs_a_layout_and_a_tx(served, tmp_path, capsys):
    root, models = served
    assert main(cli_args(root, models, "--out", str(tmp_path / "gain.png"))) == 2
    assert "or --queries FILE.jsonl" in capsys.readouterr().err


def test_empty_query_file_is_a_user_error(served, tmp_path, capsys):
    root, models = served
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert main(cli_args(root, models, "--queries", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "m"))) == 2
    assert "no queries" in capsys.readouterr().err



@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_a_signal_mid_run_leaves_the_old_maps_whole_and_a_bank_that_verifies(served, tmp_path, signum):
    """SIGINT or SIGKILL while `predict --queries` stores misses: --out keeps the earlier run's
    maps as they were (no truncated or mixed-in PNG), the bank verifies, and the next run
    finishes and clears what the killed one left beside --out."""
    import subprocess
    import sys
    import time

    import numpy as np
    from PIL import Image

    root, models = served
    rng = np.random.default_rng(0)
    lines = []
    for i in range(60):  # new layouts: every query misses the bank and stores a part
        layout = np.zeros((256, 256), np.uint8)
        for _ in range(6):
            r, c = rng.integers(48, 200, size=2)
            layout[r:r + 24, c:c + 24] = 255
        Image.fromarray(layout).save(tmp_path / f"layout{i}.png")
        lines.append(json.dumps({"buildings": f"layout{i}.png", "tx": [8, 8]}))
    queries = tmp_path / "many.jsonl"
    queries.write_text("\n".join(lines) + "\n")
    out, bank = tmp_path / "maps", tmp_path / "bank"
    out.mkdir()
    (out / "00000.png").write_bytes(b"an earlier run's map")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    command = [str(Path(sys.executable).parent / "radiodiff"), *cli_args(root, models, "--queries", str(queries),
                                                                        "--out", str(out), "--bank", str(bank))]
    # A shell's background job starts with SIGINT ignored, and Python keeps an ignored SIGINT
    # ignored: restore the default so that the child gets its KeyboardInterrupt, as at a terminal.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list(bank.glob("part-*.parquet"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    if signum == signal.SIGINT:
        assert process.returncode == 130 and err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
        assert not list(tmp_path.glob(".maps.*"))  # its staging folder went with it
    else:
        assert process.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    verified = subprocess.run([str(Path(sys.executable).parent / "radiodiff"), "bank", "verify", str(bank)],
                              capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0 and verified.stdout.startswith("ok: "), verified.stderr

    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(60)]
    assert not list(tmp_path.glob(".maps.*"))  # nothing left beside --out, the killed run's staging included
