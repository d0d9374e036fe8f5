"""Bad input, property-based: `radiodiff simulate` and `radiodiff predict` answer a user mistake
(and a full disk) with one `error:` line and exit code 2, never a traceback and never a new file
in the output folder.

Hypothesis draws the inputs (wrong sizes, dtypes and modes, non-binary values, NaN/inf,
empty and all-building maps, Tx outside or deep inside buildings); an independent oracle says
whether each input is valid, so a wrongly accepted input fails too.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from radiodiff.cli import main
from radiodiff.config import (
    ConditionConfig,
    DiffusionConfig,
    LDMConfig,
    UNetConfig,
    VAEConfig,
)
from tests.bad_input_helpers import (
    HEALTH,
    SETTINGS,
    assert_refused,
    files_under,
    write_png,
)


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    """`radiodiff ARGV` in-process: (exit code, stdout, stderr); argparse's own exits included."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage line + `error:` line, code 2
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err



# -- radiodiff simulate (a user's own layout) ----------------------------------------------------


def _layout_is_valid(array: np.ndarray) -> bool:
    if array.ndim == 3:  # colour: judged on its gray levels, as a viewer would show it
        array = np.asarray(Image.fromarray(array).convert("L"))
    values = set(np.unique(array).tolist())
    binary = any(values <= {0, high} for high in (1, 255, 65535))
    return array.shape[0] == array.shape[1] and binary


def _tx_is_valid(buildings: np.ndarray, row: int, col: int) -> bool:
    """Inside the map, and free or within 2 px (Chebyshev) of a free pixel."""
    side = buildings.shape[0]
    if not (0 <= row < side and 0 <= col < side):
        return False
    window = buildings[max(row - 2, 0): row + 3, max(col - 2, 0): col + 3]
    return bool((~window).any())


BINARY_LAYOUTS = st.integers(2, 16).flatmap(lambda n: st.lists(st.sampled_from([0, 255]), min_size=n * n, max_size=n * n)
                               .map(lambda v, n=n: np.array(v, np.uint8).reshape(n, n)))
LAYOUTS = st.one_of(
    BINARY_LAYOUTS,
    BINARY_LAYOUTS,  # drawn three times as often: many draws should reach the simulator
    BINARY_LAYOUTS,
    st.integers(2, 12).map(lambda n: np.zeros((n, n), np.uint8)),  # empty
    st.integers(2, 12).map(lambda n: np.full((n, n), 255, np.uint8)),  # all building
    st.tuples(st.integers(2, 12), st.integers(2, 12)).map(lambda s: np.zeros(s, np.uint8)),  # maybe not square
    st.integers(2, 12).flatmap(lambda n: st.lists(st.integers(0, 255), min_size=n * n, max_size=n * n)
                               .map(lambda v, n=n: np.array(v, np.uint8).reshape(n, n))),  # gray levels
    st.integers(2, 12).map(lambda n: (np.arange(n * n).reshape(n, n) % 2 * 1000).astype(np.uint16)),  # 16-bit
    st.integers(2, 12).map(lambda n: np.stack([np.eye(n, dtype=np.uint8) * 255] * 3, -1)),  # RGB
)
PIXEL_SIZES = st.one_of(st.none(), st.floats(0.5, 8.0),
                        st.floats(allow_nan=True, allow_infinity=True, width=32)
                        | st.sampled_from(["nan", "inf", "-1", "0", "1e300", "1e-300"]))


@settings(max_examples=40, deadline=None, suppress_health_check=HEALTH)
@given(layout=LAYOUTS, data=st.data(), pixel_size=PIXEL_SIZES)
def test_simulate_file_form_succeeds_exactly_on_valid_input(layout, data, pixel_size, capsys):
    row, col = (data.draw(st.integers(-2, side + 1)) for side in layout.shape[:2])  # mostly inside, some not
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        buildings = write_png(folder / "layout.png", layout)
        out = folder / "out" / "map.png"
        argv = ["simulate", "--buildings", str(buildings), "--tx", str(row), str(col), "--out", str(out)]
        if pixel_size is not None:
            argv += [f"--pixel-size-m={pixel_size}"]
        before = files_under(folder)
        code, _stdout, err = _run(argv, capsys)
        size = None if pixel_size is None else float(pixel_size)
        valid = (_layout_is_valid(layout) and _tx_is_valid(layout > 0, row, col)
                 and (size is None or (math.isfinite(size) and 0.01 <= size <= 1000)))
        event("accepted" if code == 0 else "refused")
        if not valid:
            assert_refused(code, err, folder, before)
            return
        assert code == 0, err
        with Image.open(out) as image:
            assert image.size == layout.shape[1::-1] and image.mode == "L"


@pytest.mark.parametrize("case", ["missing", "directory", "truncated", "not-an-image", "out-is-folder",
                                  "out-parent-is-file", "cars-wrong-size", "cars-not-binary"])
def test_simulate_file_mistakes(case, tmp_path, capsys):
    layout = np.zeros((16, 16), np.uint8)
    layout[8:, 8:] = 255
    buildings = write_png(tmp_path / "layout.png", layout)
    out = tmp_path / "map.png"
    extra = []
    if case == "missing":
        buildings = tmp_path / "absent.png"
    elif case == "directory":
        buildings = tmp_path
    elif case == "truncated":
        buildings.write_bytes(buildings.read_bytes()[:40])
    elif case == "not-an-image":
        buildings.write_text("row,col\n1,2\n")
    elif case == "out-is-folder":
        out.mkdir()
    elif case == "out-parent-is-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "map.png"
    elif case == "cars-wrong-size":
        extra = ["--cars", str(write_png(tmp_path / "cars.png", np.zeros((8, 8), np.uint8)))]
    else:
        extra = ["--cars", str(write_png(tmp_path / "cars.png", np.full((16, 16), 7, np.uint8)))]
    before = files_under(tmp_path)
    code, _, err = _run(["simulate", "--buildings", str(buildings), "--tx", "2", "2", "--out", str(out), *extra],
                        capsys)
    assert_refused(code, err, tmp_path, before)


def test_simulate_out_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    before = files_under(tmp_path)
    code, _, err = _run(["simulate", "--map-id", "1", "--tx-id", "0", "--out-dir", str(tmp_path / "taken")], capsys)
    assert_refused(code, err, tmp_path, before, "cannot create the folder")


FLAG_SOUP = st.lists(st.sampled_from(["--map-id", "--tx-id", "--tx", "--out", "--cars", "x", "-1", "701", "3", "nan",
                                      "--pixel-size-m", "--buildings"]), max_size=6)


@SETTINGS
@given(argv=FLAG_SOUP)
def test_simulate_random_flag_soup_never_tracebacks(argv, capsys):
    with tempfile.TemporaryDirectory() as folder:
        before = files_under(Path(folder))
        code, _, err = _run(["simulate", *argv, "--out-dir", str(Path(folder) / "o")], capsys)
        if code != 0:
            assert code == 2 and "Traceback" not in err and err.strip().splitlines()[-1].count("error: ") == 1
            assert files_under(Path(folder)) == before


# -- radiodiff predict -------------------------------------------------------------------------

RES = 32


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Toy untrained vae.pt and ldm.pt at 32 x 32, and a params file that fits them."""
    return _toy_models(tmp_path_factory.mktemp("bad-predict"))


def _toy_models(root: Path, resolution: int | None = None) -> Path:
    """`root/models/{vae,ldm}.pt` (the VAE recording `resolution` as its training maps' side
    when given) and `root/params.yaml` at 32 x 32."""
    from radiodiff.artifacts.denoiser import build_unet, save_ldm
    from radiodiff.artifacts.vae import build_vae, save_vae

    torch.manual_seed(0)
    vae_cfg = VAEConfig(base_channels=4, channel_mults=(1, 2, 4))
    ldm_cfg = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                        diffusion=DiffusionConfig(num_steps=50), sample_steps=2)
    vae = build_vae(vae_cfg).eval()
    save_vae(root / "models" / "vae.pt", vae, vae_cfg, scale_factor=1.0, resolution=resolution)
    unet = build_unet(ldm_cfg, ConditionConfig().channels, vae.latent_channels).eval()
    save_ldm(root / "models" / "ldm.pt", unet, ldm_cfg, ConditionConfig(), root / "models" / "vae.pt")
    _params(root / "params.yaml")
    return root


def _params(path: Path, **flux) -> Path:
    settings_ = {"t_mids": [30], "t_mid": 30, "prefix_steps": 2, "tail_steps": 1, "seeds": [0], **flux}
    path.write_text(yaml.safe_dump({"prepare": {"resolution": RES}, "flux": settings_}))
    return path


def _predict(models: Path, folder: Path, buildings: Path, tx, *extra: str) -> list[str]:
    return ["predict", "--buildings", str(buildings), "--tx", str(tx[0]), str(tx[1]), "--out", str(folder / "g.png"),
            "--models", str(models / "models"), "--params", str(models / "params.yaml"), *extra]


def _blocks(seed: int, count: int) -> np.ndarray:
    """A 256 x 256 layout of `count` random rectangular buildings (255)."""
    rng = np.random.default_rng(seed)
    layout = np.zeros((256, 256), np.uint8)
    for _ in range(count):
        r, c = rng.integers(0, 240, 2)
        h, w = rng.integers(8, 64, 2)
        layout[r:r + h, c:c + w] = 255
    return layout


PREDICT_LAYOUTS = st.one_of(
    st.tuples(st.integers(0, 10**6), st.integers(0, 12)).map(lambda a: _blocks(*a)),
    st.tuples(st.integers(0, 10**6), st.integers(0, 6)).map(lambda a: _blocks(*a)),
    st.just(np.zeros((256, 256), np.uint8)),  # empty
    st.just(np.full((256, 256), 255, np.uint8)),  # all building
    st.sampled_from([(255, 256), (128, 128), (256, 255), (512, 512), (96, 96), (2048, 2048)])
    .map(lambda s: np.zeros(s, np.uint8)),
    st.integers(0, 10**6).map(lambda s: np.random.default_rng(s).integers(0, 256, (256, 256)).astype(np.uint8)),
    st.just((np.indices((256, 256)).sum(0) % 2 * 40000).astype(np.uint16)),  # 16-bit, not binary
)


def _predict_is_valid(layout: np.ndarray, row: int, col: int) -> bool:
    from radiodiff.data.resample import majority

    side = layout.shape[0]
    square = layout.ndim == 2 and layout.shape[0] == layout.shape[1] and side % RES == 0 and RES <= side <= 1024
    if not square or not _layout_is_valid(layout) or not _tx_is_valid(layout > 0, row, col):
        return False
    factor = side // RES  # any square side that is a multiple of the model's resolution is the 256 m block
    low = majority(layout > 0, factor)
    near = np.indices(low.shape)
    free = ~low & (np.abs(near[0] - row // factor) <= 2) & (np.abs(near[1] - col // factor) <= 2)
    return bool(free.any())  # approximate: the Tx snaps at 1 m first, which moves it by <= 2 px


@settings(max_examples=16, deadline=None, suppress_health_check=HEALTH)
@given(layout=PREDICT_LAYOUTS, row=st.integers(-2, 257), col=st.integers(-2, 257))
def test_predict_succeeds_only_on_valid_layouts_and_tx(models, layout, row, col, capsys):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        buildings = write_png(folder / "b.png", layout)
        before = files_under(folder)
        code, _, err = _run(_predict(models, folder, buildings, (row, col)), capsys)
        valid = _predict_is_valid(layout, row, col)
        event("accepted" if code == 0 else "refused")
        if code == 0:
            assert valid
            with Image.open(folder / "g.png") as image:
                assert image.size == (RES, RES)
        else:
            assert not (valid and not (layout > 0).any())  # on an empty map every Tx inside is fine
            assert_refused(code, err, folder, before)


def _damaged_bank(folder: Path) -> list[str]:
    bank = folder / "bank"
    bank.mkdir()
    (bank / "part-0000000000000000.parquet").write_bytes(b"PAR1 not really PAR1")
    return ["--bank", str(bank)]


PREDICT_MISTAKES = {
    # name: (extra arguments made in a folder, what the error says)
    "bank-is-a-file": (lambda f: ["--bank", str(write_png(f / "bank.png", np.zeros((2, 2), np.uint8)))], "directory"),
    "garbage-models": (lambda f: ["--models", str(_garbage_models(f))], "not a readable radiodiff model file"),
    "params-nan": (lambda f: ["--params", str(_params(f / "p.yaml", nearest_max_distance=float("nan")))], "finite"),
    "params-huge-seed": (lambda f: ["--params", str(_params(f / "p.yaml", seeds=[2**40]))], "seeds must be in"),
    "params-tiny-resolution": (lambda f: ["--params", str(_resolution(f / "p.yaml", 8))], "at least"),
    "params-t-mid-beyond-model": (lambda f: ["--params", str(_params(f / "p.yaml", t_mids=[80], t_mid=80))],
                                  "do not fit"),
    "out-is-folder": (lambda f: (f / "g.png").mkdir() or [], "is a folder"),
    "uncertainty-is-folder": (lambda f: (f / "u.png").mkdir() or ["--samples", "2", "--uncertainty", str(f / "u.png")],
                              "is a folder"),
    "cars-all-gray": (lambda f: ["--cars", str(write_png(f / "c.png", np.full((256, 256), 9, np.uint8)))],
                      "not binary"),
    "cars-wrong-size": (lambda f: ["--cars", str(write_png(f / "c.png", np.zeros((64, 64), np.uint8)))], "256x256"),
    "missing-cars": (lambda f: ["--cars", str(f / "absent.png")], "file not found"),
    "cars-is-a-directory": (lambda f: (f / "cars").mkdir() or ["--cars", str(f / "cars")], "is a directory"),
    "cars-only-in-alpha": (lambda f: ["--cars", str(_alpha_only_png(f / "c.png"))], "transparent pixels"),
    "samples-unbounded": (lambda f: ["--samples", "1000"], "--samples must be in 1..64"),
    "threads-unbounded": (lambda f: ["--threads", "1000000"], "this machine's cores"),
}


def _alpha_only_png(path: Path) -> Path:
    """An RGBA mask whose colour is black everywhere and whose occupied pixels are only opaque:
    read as gray it would be all free."""
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[100:140, 100:140, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(path)
    return path


def _garbage_models(folder: Path) -> Path:
    (folder / "m").mkdir()
    for name in ("ldm.pt", "vae.pt"):
        (folder / "m" / name).write_bytes(b"PK\x03\x04 not a torch file")
    return folder / "m"


def _resolution(path: Path, resolution: int) -> Path:
    _params(path)
    document = yaml.safe_load(path.read_text())
    document["prepare"]["resolution"] = resolution
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("case", PREDICT_MISTAKES, ids=list(PREDICT_MISTAKES))
def test_predict_mistakes_are_one_line_and_write_nothing(models, tmp_path, capsys, case):
    make, fragment = PREDICT_MISTAKES[case]
    buildings = write_png(tmp_path / "b.png", _blocks(1, 4))
    extra = make(tmp_path)
    before = files_under(tmp_path)
    code, _, err = _run(_predict(models, tmp_path, buildings, (2, 2)) + list(extra), capsys)
    assert_refused(code, err, tmp_path, before, fragment)


@pytest.mark.parametrize("command", ["simulate", "predict"])
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(models, tmp_path, monkeypatch, capsys, command):
    import errno

    def full_disk(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")  # what a write cut short leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")

    layout = _blocks(3, 4) if command == "predict" else np.zeros((16, 16), np.uint8)
    buildings = write_png(tmp_path / "b.png", layout)
    monkeypatch.setattr(Image.Image, "save", full_disk)
    before = files_under(tmp_path)
    if command == "predict":
        argv = _predict(models, tmp_path, buildings, (2, 2))
    else:
        argv = ["simulate", "--buildings", str(buildings), "--tx", "2", "2", "--out", str(tmp_path / "g.png")]
    code, _, err = _run(argv, capsys)
    assert_refused(code, err, tmp_path, before, "No space left on device", "g.png")


def test_predict_buildings_that_are_a_directory_or_only_alpha_are_refused(models, tmp_path, capsys):
    (tmp_path / "layout").mkdir()
    for buildings, fragment in ((tmp_path / "layout", "is a directory"),
                                (_alpha_only_png(tmp_path / "b.png"), "transparent pixels")):
        before = files_under(tmp_path)
        code, _, err = _run(_predict(models, tmp_path, buildings, (2, 2)), capsys)
        assert_refused(code, err, tmp_path, before, fragment)


def test_an_opaque_rgba_mask_reads_as_its_gray_values(tmp_path):
    from radiodiff.data.layout import read_mask_png

    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[10:20, 30:40, :3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "m.png")
    mask = read_mask_png(tmp_path / "m.png")
    assert mask.sum() == 100 and mask[10:20, 30:40].all()


def _queries_file(folder: Path, lines: list[str]) -> Path:
    write_png(folder / "b.png", _blocks(1, 4))
    path = folder / "q.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _batch(models: Path, queries: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", "--queries", str(queries), "--out", str(out), "--models", str(models / "models"),
            "--params", str(models / "params.yaml"), *extra]


def test_predict_queries_nested_json_is_one_line(models, tmp_path, capsys):
    queries = _queries_file(tmp_path, ['{"buildings": "b.png", "tx": [2, 2]}', "[" * 100_000 + "]" * 100_000])
    before = files_under(tmp_path)
    code, _, err = _run(_batch(models, queries, tmp_path / "maps"), capsys)
    assert_refused(code, err, tmp_path, before, "line 2", "nested too deeply")


def test_predict_queries_into_an_unwritable_parent_is_one_line(models, tmp_path, monkeypatch, capsys):
    import errno
    import tempfile as tempfile_module

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    queries = _queries_file(tmp_path, ['{"buildings": "b.png", "tx": [2, 2]}'])
    monkeypatch.setattr(tempfile_module, "mkdtemp", read_only)
    before = files_under(tmp_path)
    code, _, err = _run(_batch(models, queries, tmp_path / "maps"), capsys)
    assert_refused(code, err, tmp_path, before, "cannot write --out", "Permission denied")


def test_predict_queries_rerun_replaces_an_earlier_longer_run(models, tmp_path, capsys):
    three = _queries_file(tmp_path, ['{"buildings": "b.png", "tx": [2, 2]}'] * 3)
    assert _run(_batch(models, three, tmp_path / "maps"), capsys)[0] == 0
    one = _queries_file(tmp_path, ['{"buildings": "b.png", "tx": [2, 2]}'])
    assert _run(_batch(models, one, tmp_path / "maps"), capsys)[0] == 0
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["00000.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".maps")]  # no temporary folder left


def test_predict_queries_refuses_a_folder_of_other_files(models, tmp_path, capsys):
    queries = _queries_file(tmp_path, ['{"buildings": "b.png", "tx": [2, 2]}'])
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "notes.txt").write_text("mine")
    before = files_under(tmp_path)
    code, _, err = _run(_batch(models, queries, tmp_path / "maps"), capsys)
    assert_refused(code, err, tmp_path, before, "holds files predict did not write", "notes.txt")


def test_predict_on_a_miss_in_a_read_only_bank_serves_and_warns_once(models, tmp_path, monkeypatch, capsys):
    import errno

    import radiodiff.bank.store as store

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    queries = _queries_file(tmp_path, ['{"buildings": "b.png", "tx": [2, 2]}'] * 3)
    (tmp_path / "bank").mkdir()
    monkeypatch.setattr(store, "writer_lock", read_only)  # a read-only folder: the lock file is the first write
    code, out, err = _run(_batch(models, queries, tmp_path / "maps", "--bank", str(tmp_path / "bank")), capsys)
    assert code == 0, err
    assert len(list((tmp_path / "maps").iterdir())) == 3 and not list((tmp_path / "bank").iterdir())
    assert err.count("not stored") == 1 and "Permission denied" in err, err
    assert "3 miss" in out  # each query missed: nothing could be stored for the next


def test_predict_with_a_damaged_bank_part_serves_and_names_it(models, tmp_path, capsys):
    """One damaged part is quarantined: named on stderr, skipped, and the map still served."""
    buildings = write_png(tmp_path / "b.png", _blocks(1, 4))
    extra = _damaged_bank(tmp_path)
    code, out, err = _run(_predict(models, tmp_path, buildings, (2, 2)) + extra, capsys)
    assert code == 0, err
    assert (tmp_path / "g.png").is_file() and "bank: miss" in out
    assert err.count("damaged bank part") == 1 and "part-0000000000000000.parquet" in err and "cannot read" in err, err
    assert "radiodiff bank verify" in err


def test_params_edited_after_training_are_refused_not_served_at_the_wrong_resolution(tmp_path, capsys):
    """The VAE file records the map side it was trained on; params asking for another are refused."""
    root = _toy_models(tmp_path / "trained", resolution=RES)
    buildings = write_png(tmp_path / "b.png", _blocks(1, 4))
    for side in (64, 16, RES):
        raw = yaml.safe_load((root / "params.yaml").read_text())
        raw["prepare"]["resolution"] = side
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
        before = files_under(tmp_path)
        code, _, err = _run(_predict(root, tmp_path, buildings, (2, 2)), capsys)
        if side == RES:
            assert code == 0, err
        else:
            assert_refused(code, err, tmp_path, before, f"trained on {RES}x{RES} maps, but the params ask for "
                                                        f"{side}x{side}")
