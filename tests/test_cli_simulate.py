"""`radiodiff simulate`: both forms, outputs that match the library, and clean refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radiodiff.cli import main
from radiodiff.data.geometry import load_geometry
from radiodiff.sim import CitySimulator


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture
def layout(tmp_path) -> dict[str, Path]:
    """A 64 x 64 street corner as PNGs (255 = building), with one car in the street."""
    buildings = np.zeros((64, 64), np.uint8)
    buildings[:10] = 255
    buildings[20:, :30] = 255
    cars = np.zeros((64, 64), np.uint8)
    cars[12:17, 40:42] = 255
    folder = tmp_path / "in"
    folder.mkdir()
    return {"buildings": write_png(folder / "b.png", buildings), "cars": write_png(folder / "c.png", cars)}


def test_map_form_writes_radiomapseer_names_matching_the_library(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", "--map-id", "1", "--tx-id", "3", "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["1_3.png"]
    scene = load_geometry().scene(1)
    assert np.array_equal(read_png(out / "1_3.png"), CitySimulator(scene.buildings).gain_gray(*scene.tx(3)))
    assert "ms per map" in capsys.readouterr().out


def test_map_form_with_cars_darkens_some_pixels(tmp_path):
    assert main(["simulate", "--map-id", "2", "--tx-id", "0", "--out-dir", str(tmp_path / "s")]) == 0
    assert main(["simulate", "--map-id", "2", "--tx-id", "0", "--out-dir", str(tmp_path / "c"), "--cars"]) == 0
    static, with_cars = read_png(tmp_path / "s/2_0.png").astype(int), read_png(tmp_path / "c/2_0.png").astype(int)
    assert (with_cars < static).mean() > 0.01 and (with_cars > static + 1).mean() < 0.001


def test_all_tx_writes_80_maps(tmp_path):
    assert main(["simulate", "--map-id", "5", "--all-tx", "--out-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"5_{k}.png" for k in range(80))


def test_file_form_on_a_small_layout(layout, tmp_path, capsys):
    """A 64 x 64 layout covers 256 m by default (4 m pixels); the car darkens the street behind it."""
    base = ["simulate", "--buildings", str(layout["buildings"]), "--tx", "15", "3"]
    assert main([*base, "--out", str(tmp_path / "static.png")]) == 0
    assert main([*base, "--out", str(tmp_path / "maps" / "cars.png"), "--cars", str(layout["cars"])]) == 0
    static, with_cars = read_png(tmp_path / "static.png"), read_png(tmp_path / "maps" / "cars.png")
    assert static.shape == (64, 64) and static[15, 3] == static.max()
    assert np.all(static[:10] == 0) and np.all(static[20:, :30] == 0)
    assert with_cars[15, 55] < static[15, 55] and with_cars[15, 30] == static[15, 30]
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--map-id", "701", "--tx-id", "0"], "unknown map id"),
        (["--map-id", "1", "--tx-id", "80"], "unknown tx id"),
        (["--map-id", "1"], "--tx-id K or --all-tx"),
        (["--map-id", "1", "--tx-id", "0", "--buildings", "{buildings}"], "exactly one of"),
        (["--buildings", "{missing}", "--tx", "1", "1", "--out", "{out}/x.png"], "file not found"),
        (["--buildings", "{gray}", "--tx", "1", "1", "--out", "{out}/x.png"], "not binary"),
        (["--buildings", "{buildings}", "--tx", "15", "3", "--out", "{out}/x.png", "--cars", "{small}"], "64x64"),
        (["--buildings", "{buildings}", "--tx", "40", "10", "--out", "{out}/x.png"], "inside a building"),
        (["--buildings", "{buildings}", "--tx", "15", "64", "--out", "{out}/x.png"], "outside"),
        (["--buildings", "{buildings}", "--tx", "15", "3", "--out", "{out}/x.jpg"], ".png"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(argv, message, layout, tmp_path, capsys):
    folder = layout["buildings"].parent
    paths = {
        "buildings": layout["buildings"],
        "missing": folder / "missing.png",
        "gray": write_png(folder / "gray.png", np.arange(64 * 64).reshape(64, 64) % 7),
        "small": write_png(folder / "small.png", np.zeros((32, 32))),
        "out": tmp_path / "out",
    }
    argv = [part.format(**paths) for part in argv]
    if "--map-id" in argv and "--buildings" not in argv:
        argv += ["--out-dir", str(paths["out"])]
    assert main(["simulate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not paths["out"].exists()


def test_console_script(layout, tmp_path):
    script = Path(sys.executable).with_name("radiodiff")
    if not script.exists():
        pytest.skip("the radiodiff console script is not installed in this environment")
    out = tmp_path / "map.png"
    argv = [str(script), "simulate", "--buildings", str(layout["buildings"]), "--tx", "15", "3", "--out", str(out)]
    ok = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert read_png(out).shape == (64, 64)
    bad = subprocess.run([str(script), "simulate", "--map-id", "999", "--tx-id", "0", "--out-dir", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown map id") and not (tmp_path / "x").exists()
