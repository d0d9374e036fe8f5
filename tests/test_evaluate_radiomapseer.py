"""`radiodiff evaluate --radiomapseer DIR` on a RadioMapSeer-format folder that the simulator writes.

The folder holds real RadioMapSeer layouts, cars and Tx sites with gain maps from our own
simulator in the dataset's conventions, so the simulator row must score exactly 0 and any
reading mistake (a Tx in the wrong coordinate order, a mis-resized target) shows.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from radiodiff.artifacts.baseline import build_baseline, save_baseline
from radiodiff.artifacts.denoiser import build_unet, save_ldm
from radiodiff.artifacts.vae import build_vae, save_vae
from radiodiff.cli import main
from radiodiff.config import BaselineConfig, ConditionConfig, DiffusionConfig, LDMConfig, UNetConfig, VAEConfig
from radiodiff.evaluation.radiomapseer import load_real_maps, score_maps
from tests.radiomapseer_folder import save_png, write_radiomapseer_folder

RES = 32
MAPS = (11, 23)  # two real layouts
TX_IDS = (0, 1)
CONDITION = ConditionConfig()
LDM_CFG = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(num_steps=50), sample_steps=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Both maps' DPM gains, the first map's carsDPM, antenna/{map}.json: the published layout."""
    return write_radiomapseer_folder(tmp_path_factory.mktemp("radiomapseer"), MAPS, TX_IDS, cars_maps=MAPS[:1])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Toy vae.pt, ldm.pt and baseline.pt (weights randomised) and a params file for them."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vae_cfg = VAEConfig(base_channels=4, channel_mults=(1, 2, 4))
    vae = build_vae(vae_cfg).eval()
    save_vae(root / "models" / "vae.pt", vae, vae_cfg, scale_factor=1.0)
    unet = build_unet(LDM_CFG, CONDITION.channels, vae.latent_channels).eval()
    with torch.no_grad():
        for param in unet.parameters():  # the zero-initialised head would make every map the same
            param.add_(0.1 * torch.randn(param.shape))
    save_ldm(root / "models" / "ldm.pt", unet, LDM_CFG, CONDITION, root / "models" / "vae.pt")
    baseline_cfg = BaselineConfig(base_channels=4, channel_mults=(1, 2), num_res_blocks=1)
    save_baseline(root / "models" / "baseline.pt", build_baseline(baseline_cfg, CONDITION.channels), baseline_cfg,
                  CONDITION)
    params = {"prepare": {"resolution": RES}, "ldm": {"sample_steps": 2},
              "flux": {"t_mids": [30], "t_mid": 30, "prefix_steps": 2, "tail_steps": 2, "seeds": [0]}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _args(models, folder, *extra: str) -> list[str]:
    return ["evaluate", "--radiomapseer", str(folder), "--models", str(models / "models"),
            "--params", str(models / "params.yaml"), "--threads", "1", *extra]


def _rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if re.match(r"^(flux|ddim_\d+|baseline|simulator) ", line)}


def test_every_method_is_scored_and_the_simulator_reproduces_its_own_maps(models, folder, tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # no plots/evaluate_table.json here: DDIM steps come from params
    out = tmp_path / "scores.json"
    assert main(_args(models, folder, "--out", str(out))) == 0
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert set(rows) == {"flux", "ddim_2", "baseline", "simulator"}
    assert rows["flux"][4] == "4"  # the cold path: 2 prefix + 2 tail calls
    last = captured.out.strip().splitlines()[-1]
    match = re.fullmatch(r"NMSE (\d+\.\d{4}) RMSE (\d+\.\d{4}) \(4 maps, flux\)", last)
    assert match and float(match[1]) > 0
    written = json.loads(out.read_text())
    assert written["gain"] == "DPM" and written["resolution"] == RES
    by_method = {row["method"]: row for row in written["rows"]}
    assert by_method["simulator"]["nmse"] == pytest.approx(0.0, abs=1e-12)
    assert by_method["flux"]["nmse"] == pytest.approx(float(match[1]), abs=1e-4)
    assert all(row["maps"] == 4 for row in written["rows"])
    assert "evaluate: 4 maps of 2 layouts" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]  # no bank, nothing else written


def test_cars_maps_and_a_chosen_subset(models, folder, capsys):
    assert main(_args(models, folder, "--gain", "carsDPM", "--maps", str(MAPS[0]), "--tx-per-map", "1",
                      "--ddim-steps", "1")) == 0
    out = capsys.readouterr().out
    assert set(_rows(out)) == {"flux", "ddim_1", "baseline", "simulator"}
    assert _rows(out)["simulator"][0] == "0.0000"
    assert out.strip().endswith("(1 maps, flux)")


@pytest.mark.parametrize("table, expected", [
    ([{"method": "ddim_5", "family": "ddim", "unet_calls_per_map": 5, "nmse": 0.03},
      {"method": "ddim_1", "family": "ddim", "unet_calls_per_map": 1, "nmse": 0.02},
      {"method": "ddim_1_tuned", "family": "few_step_tuned", "unet_calls_per_map": 3, "nmse": 0.01}],
     "ddim_1 (best DDIM of plots/evaluate_table.json)"),
    ([{"method": "ddim_1", "family": "ddim", "nmse": 0.02}], "ddim_2 (params ldm.sample_steps)"),
    ({"not": "a list of rows"}, "ddim_2 (params ldm.sample_steps)"),
], ids=["best-row", "row-without-calls", "not-rows"])
def test_ddim_steps_are_the_evaluate_stages_best_else_params(models, folder, tmp_path, capsys, monkeypatch, table,
                                                            expected):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "evaluate_table.json").write_text(json.dumps(table))
    monkeypatch.chdir(tmp_path)
    assert main(_args(models, folder, "--no-simulator", "--maps", str(MAPS[0]), "--tx-per-map", "1")) == 0
    assert f"evaluate: {expected} ..." in capsys.readouterr().err


def test_a_split_scores_the_folders_maps_of_radiounets_split_only(models, tmp_path, capsys):
    folder = write_radiomapseer_folder(tmp_path / "split", maps=(11, 15), tx_ids=(0, 1))  # a train and a test city
    real = load_real_maps(folder, RES, split="test", progress=False)
    assert {sample.map_id for sample in real.samples} == {15} and len(real.samples) == 2
    assert main(_args(models, folder, "--split", "test", "--tx-per-map", "1", "--no-simulator")) == 0
    captured = capsys.readouterr()
    assert "evaluate: 1 maps of 1 layouts" in captured.err and captured.out.strip().endswith("(1 maps, flux)")
    assert main(_args(models, folder, "--split", "val")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no gain maps of the 100 maps of RadioUNet's val split" in err


def test_sites_from_antennas_csv_as_the_geometry_copy_has_them(models, folder, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    lines = ["map_id,tx_id,row,col"]
    for map_id in MAPS:
        sites = json.loads((copy / "antenna" / f"{map_id}.json").read_text())
        lines += [f"{map_id},{k},{row},{col}" for k, (col, row) in enumerate(sites)]
    shutil.rmtree(copy / "antenna")
    (copy / "antennas.csv").write_text("\n".join(lines) + "\n")
    assert main(_args(models, copy, "--no-simulator", "--tx-per-map", "1")) == 0
    assert set(_rows(capsys.readouterr().out)) == {"flux", "ddim_2", "baseline"}


def _with_antenna_images(folder, tmp_path, blank: str | None = None):
    """A copy with each Tx's png/antennas/{map}_{tx}.png (its site's pixel lit), as the published
    dataset has them; the image named `blank` left all 0."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    for map_id in MAPS:
        sites = json.loads((copy / "antenna" / f"{map_id}.json").read_text())
        for tx_id in TX_IDS:
            image = np.zeros((256, 256), np.uint8)
            if f"{map_id}_{tx_id}" != blank:
                col, row = sites[tx_id]
                image[row, col] = 255
            save_png(copy / "png" / "antennas" / f"{map_id}_{tx_id}.png", image)
    return copy


def test_tx_sites_from_the_antenna_images_need_no_list_and_no_order(models, folder, tmp_path, capsys):
    copy = _with_antenna_images(folder, tmp_path)
    listed = json.loads((copy / "antenna" / "11.json").read_text())
    (copy / "antenna" / "11.json").write_text(json.dumps([[row, col] for col, row in listed]))  # refused alone
    (copy / "antenna" / "23.json").unlink()
    out = tmp_path / "scores.json"
    assert main(_args(models, copy, "--out", str(out))) == 0
    by_method = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert by_method["simulator"]["nmse"] == pytest.approx(0.0, abs=1e-12)  # every Tx where its map was made
    assert by_method["simulator"]["maps"] == 4


def _swapped_antenna_images(folder, tmp_path):
    copy = _with_antenna_images(folder, tmp_path)
    first, second = (copy / "png" / "antennas" / f"{MAPS[0]}_{tx_id}.png" for tx_id in TX_IDS)
    first.rename(first.with_suffix(".tmp"))
    second.rename(first)
    first.with_suffix(".tmp").rename(second)
    return copy


def _without(folder, tmp_path, relative: str):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    target = copy / relative
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    return copy


@pytest.mark.parametrize("change, message", [
    (lambda m, f, t: _args(m, t / "absent"), "RadioMapSeer folder not found"),
    (lambda m, f, t: _args(m, _without(f, t, "gain")), "no gain folder"),
    (lambda m, f, t: _args(m, _without(f, t, "png/buildings_complete/11.png")), "file not found"),
    (lambda m, f, t: _args(m, _without(f, t, "antenna/23.json")), "missing Tx sites"),
    (lambda m, f, t: _args(m, f, "--maps", "99"), "no gain maps of map(s) 99"),
    (lambda m, f, t: _args(m, f, "--antenna-order", "rowcol"), "--antenna-order xy"),
    (lambda m, f, t: _args(m, _with_antenna_images(f, t, blank="23_1")), "no Tx pixel"),
    (lambda m, f, t: _args(m, _swapped_antenna_images(f, t)), "does not peak at the Tx site"),
    (lambda m, f, t: _args(m, f, "--ddim-steps", "0"), "--ddim-steps must be >= 1"),
    (lambda m, f, t: _args(m, f, "--out", str(t / "scores.csv")), "--out must be a .json file"),
    (lambda m, f, t: _args(m, f) + ["--models", str(t / "nowhere")], "model file not found"),
], ids=["no-folder", "no-gain", "missing-layout", "missing-sites", "unknown-map", "wrong-order", "blank-tx-image",
        "swapped-tx-images", "zero-steps", "not-json", "no-models"])
def test_a_bad_folder_or_flag_is_one_error_line_and_exit_2(models, folder, tmp_path, capsys, change, message):
    assert main(change(models, folder, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1 and message in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_nmse_is_mse_over_the_truth_energy_per_map_and_free_pixels_exclude_buildings():
    target = np.full((2, 4, 4), 0.5, np.float32)
    buildings = np.zeros((2, 4, 4), bool)
    buildings[:, 0] = True
    target[:, 0] = 0.0  # buildings hold 0 in the truth
    pred = target.copy()
    pred[1] *= 2.0  # map 1 off by its own value on free pixels: NMSE 1 there
    pred[:, 0] = 0.3  # a model that leaks gain onto buildings is charged on all pixels only
    scores = score_maps(pred, target, buildings)
    assert scores["nmse_free"] == pytest.approx(0.5)
    assert scores["nmse"] > scores["nmse_free"]
    assert scores["rmse_free"] == pytest.approx(0.25)
    assert score_maps(target, target, buildings)["nmse"] == 0.0
