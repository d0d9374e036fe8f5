"""Serving with RadioDiff-Flux: query preparation, bank reuse, sampling, the tail and `radiodiff predict`.

The models are untrained toy networks whose weights are randomised (the denoiser's zero-initialised
output head would otherwise make every map the same), saved the way the pipeline saves them.
"""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from radiodiff.bank import MidpointBank
from radiodiff.cli import main
from radiodiff.config import (
    ConditionConfig,
    DiffusionConfig,
    FluxConfig,
    LDMConfig,
    UNetConfig,
    VAEConfig,
)
from radiodiff.artifacts.denoiser import build_unet, save_ldm, save_tail
from radiodiff.artifacts.keys import bank_key
from radiodiff.artifacts.vae import build_vae, save_vae
from radiodiff.data.resample import upsample_gain
from radiodiff.errors import UserError
from radiodiff.serve import FluxPredictor, layout_scene_id, prepare_query

RES = 32  # model resolution: 8 m pixels, latent 3 x 8 x 8
FACTOR = 256 // RES
FLUX = FluxConfig(t_mids=(30,), t_mid=30, prefix_steps=2, tail_steps=2, seeds=(0, 1), use_tuned_tail=True)
VAE_CFG = VAEConfig(base_channels=4, channel_mults=(1, 2, 4))
LDM_CFG = LDMConfig(unet=UNetConfig(base_channels=8, channel_mults=(1, 2), cond_base_channels=4),
                    diffusion=DiffusionConfig(num_steps=50), sample_steps=2)
CONDITION = ConditionConfig()
TX = (20, 20)  # a free pixel of LAYOUT, far from its changed block


def _jitter(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))


def _layout() -> np.ndarray:
    """A 256 x 256 layout: four 64 m buildings on a grid of streets."""
    buildings = np.zeros((256, 256), dtype=bool)
    for r0 in (48, 144):
        for c0 in (48, 144):
            buildings[r0:r0 + 64, c0:c0 + 64] = True
    return buildings


LAYOUT = _layout()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder with toy vae.pt and ldm.pt, and a params file pointing at them."""
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    vae = build_vae(VAE_CFG).eval()
    save_vae(root / "models" / "vae.pt", vae, VAE_CFG, scale_factor=1.0)
    unet = build_unet(LDM_CFG, CONDITION.channels, vae.latent_channels).eval()
    _jitter(unet, seed=1)
    save_ldm(root / "models" / "ldm.pt", unet, LDM_CFG, CONDITION, root / "models" / "vae.pt")
    params = {"prepare": {"resolution": RES},
              "flux": {"t_mids": [30], "t_mid": 30, "prefix_steps": 2, "tail_steps": 2, "seeds": [0, 1]}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def _predictor(models, **kwargs) -> FluxPredictor:
    kwargs.setdefault("flux", FLUX)
    return FluxPredictor.from_files(ldm_path=models / "models" / "ldm.pt", vae_path=models / "models" / "vae.pt",
                                    resolution=RES, **kwargs)


def test_prepare_query_downsamples_like_prepare_and_snaps_the_tx():
    query = prepare_query(LAYOUT, TX, None, RES)
    assert query.buildings.shape == (RES, RES) and query.buildings[8, 8] and not query.buildings[0, 0]
    assert query.tx == (TX[0] // FACTOR, TX[1] // FACTOR) and not query.cars.any()
    # (47, 60) is free at 1 m but its 8 m block (5, 7) lies mostly in a building: snapped next door.
    edge = np.zeros((256, 256), dtype=bool)
    edge[41:, 48:] = True
    snapped = prepare_query(edge, (40, 60), None, RES)
    assert snapped.tx == (4, 7) and not snapped.buildings[snapped.tx]


@pytest.mark.parametrize("tx, match", [((300, 10), "outside"), ((80, 80), "inside a building")])
def test_prepare_query_rejects_bad_tx(tx, match):
    with pytest.raises(UserError, match=match):
        prepare_query(LAYOUT, tx, None, RES)


def test_prepare_query_rejects_a_tx_deep_in_a_low_res_building():
    # A 1 m hole in a big building: free at 256, but 5 blocks from free space at 32.
    buildings = LAYOUT.copy()
    buildings[48:112, 48:112] = True
    buildings[80, 80] = False
    with pytest.raises(UserError, match="at the model's 32x32 resolution"):
        prepare_query(buildings, (80, 80), None, RES)


def test_predict_shape_range_and_same_seed_across_predictors(models):
    query = prepare_query(LAYOUT, TX, None, RES)
    gain, std, stats = _predictor(models).predict([query])
    again, _, _ = _predictor(models).predict([query])
    assert gain.shape == (1, RES, RES) and gain.dtype == np.float32 and std is None
    assert 0.0 <= gain.min() and gain.max() <= 1.0 and gain.std() > 0
    assert np.all(gain[0][query.buildings] == 0)
    assert np.array_equal(gain, again)
    assert stats == {"bank_hits": 0, "bank_nearest": 0, "bank_misses": 0, "bank_unstored": 0}


def test_batched_queries_match_single_queries(models):
    other = LAYOUT.copy()
    other[200:256, 0:40] = True
    queries = [prepare_query(LAYOUT, TX, None, RES), prepare_query(LAYOUT, (130, 20), None, RES),
               prepare_query(other, TX, None, RES)]
    predictor = _predictor(models)
    batch, _, _ = predictor.predict(queries)
    for i, query in enumerate(queries):
        single, _, _ = predictor.predict([query])
        np.testing.assert_allclose(batch[i], single[0], atol=1e-5)
    assert not np.allclose(batch[0], batch[1])  # the Tx reaches the map


def test_bank_miss_inserts_then_hits_then_serves_a_similar_layout(models, tmp_path):
    predictor = _predictor(models, bank_dir=tmp_path / "bank")
    query = prepare_query(LAYOUT, TX, None, RES)
    first, _, stats = predictor.predict([query])
    assert stats == {"bank_hits": 0, "bank_nearest": 0, "bank_misses": 1, "bank_unstored": 0} and len(predictor.bank) == 1
    second, _, stats = predictor.predict([query])
    assert stats == {"bank_hits": 1, "bank_nearest": 0, "bank_misses": 0, "bank_unstored": 0}
    assert np.array_equal(first, second)
    assert np.array_equal(first, _predictor(models).predict([query])[0])  # the bank changes nothing
    changed = LAYOUT.copy()
    changed[200:208, 0:8] = True  # one 8 m block more: a new scene id, a close embedding
    near_query = prepare_query(changed, TX, None, RES)
    assert layout_scene_id(near_query.buildings) != layout_scene_id(query.buildings)
    near, _, stats = predictor.predict([near_query])
    assert stats == {"bank_hits": 0, "bank_nearest": 1, "bank_misses": 0, "bank_unstored": 0} and len(predictor.bank) == 1
    assert not np.array_equal(near, first)


def test_a_query_of_k_samples_adds_one_part_file(models, tmp_path):
    predictor = _predictor(models, bank_dir=tmp_path / "bank")
    _, _, stats = predictor.predict([prepare_query(LAYOUT, TX, None, RES)], samples=4)
    assert stats["bank_misses"] == 4 and len(predictor.bank) == 4
    assert len(list((tmp_path / "bank").glob("part-*.parquet"))) == 1  # a bank grows by entries, not files


def test_a_sealed_bank_is_read_and_misses_go_beside_it(models, tmp_path):
    from radiodiff.bank import set_sealed

    _predictor(models, bank_dir=tmp_path / "bank").predict([prepare_query(LAYOUT, TX, None, RES)])
    set_sealed(tmp_path / "bank", True)  # as build_bank leaves it
    built = {p.name: p.read_bytes() for p in (tmp_path / "bank").iterdir()}
    predictor = _predictor(models, bank_dir=tmp_path / "bank")
    other = LAYOUT.copy()
    other[100:180, 100:180] = True
    _, _, stats = predictor.predict([prepare_query(LAYOUT, TX, None, RES), prepare_query(other, TX, None, RES)],
                                    samples=1)
    assert stats["bank_hits"] == 1 and stats["bank_unstored"] == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "bank").iterdir()} == built
    assert len(list((tmp_path / "bank-serving").glob("part-*.parquet"))) == stats["bank_misses"]


def test_bank_is_keyed_on_the_served_model_and_t_mid(models, tmp_path):
    predictor = _predictor(models, bank_dir=tmp_path / "bank")
    predictor.predict([prepare_query(LAYOUT, TX, None, RES)], samples=2)
    expected = bank_key(predictor.model, models / "models" / "ldm.pt", FLUX, FLUX.t_mid)
    stored = MidpointBank(tmp_path / "bank", expected)
    scene = layout_scene_id(prepare_query(LAYOUT, TX, None, RES).buildings)
    assert len(stored) == 2 and stored.has(scene, seed=0) and stored.has(scene, seed=1)


def test_several_samples_give_a_spread(models):
    query = prepare_query(LAYOUT, TX, None, RES)
    predictor = _predictor(models)
    gain, std, _ = predictor.predict([query], samples=3)
    assert std is not None and std.shape == (1, RES, RES) and std.min() >= 0 and std.max() > 0
    first, _, _ = predictor.predict([query], samples=1)
    assert not np.allclose(gain, first)  # the mean includes seeds 1 and 1002


def test_tuned_tail_is_used_when_present_and_wanted(models, tmp_path):
    query = prepare_query(LAYOUT, TX, None, RES)
    plain = _predictor(models)
    tail = copy.deepcopy(plain.model.unet)
    _jitter(tail, seed=7)
    tail_path = tmp_path / "flux_tail.pt"
    save_tail(tail_path, tail, FLUX, models / "models" / "ldm.pt")
    base, _, _ = plain.predict([query])
    tuned, _, _ = _predictor(models, tail_path=tail_path).predict([query])
    assert not np.allclose(tuned, base)
    unwanted = dataclasses.replace(FLUX, use_tuned_tail=False)
    assert np.array_equal(_predictor(models, tail_path=tail_path, flux=unwanted).predict([query])[0], base)
    assert np.array_equal(_predictor(models, tail_path=tmp_path / "absent.pt").predict([query])[0], base)


def _png(path, mask: np.ndarray) -> str:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return str(path)


def _cli(models, tmp_path, *extra: str) -> list[str]:
    return ["predict", "--buildings", _png(tmp_path / "buildings.png", LAYOUT), "--tx", "20", "20",
            "--models", str(models / "models"), "--params", str(models / "params.yaml"), *extra]


def test_cli_writes_maps_and_reports_the_bank(models, tmp_path, capsys):
    out, spread = tmp_path / "gain.png", tmp_path / "std.png"
    args = _cli(models, tmp_path, "--out", str(out), "--bank", str(tmp_path / "bank"))
    assert main(args) == 0
    captured = capsys.readouterr()
    line = captured.out.strip()
    # the fixture's models have no fine-tuned tail: the plain one serves, said on stderr and in the line
    assert re.fullmatch(rf"wrote {re.escape(str(out))} \(32x32, 1 sample, bank: miss, tail: plain, \d+ ms on cpu\)",
                        line)
    assert captured.err.count("warning:") == 1 and "flux_tail.pt not found" in captured.err
    image = np.asarray(Image.open(out))
    assert image.shape == (RES, RES) and image.dtype == np.uint8 and image.max() > 0
    assert main(args) == 0 and "bank: hit" in capsys.readouterr().out
    cars = np.zeros((256, 256), dtype=bool)
    cars[16:24, 100:140] = True
    assert main(_cli(models, tmp_path, "--out", str(out), "--cars", _png(tmp_path / "cars.png", cars),
                     "--samples", "3", "--uncertainty", str(spread))) == 0
    assert "3 samples, bank: none" in capsys.readouterr().out
    assert np.asarray(Image.open(spread)).shape == (RES, RES)


def test_a_cars_query_is_served_from_the_static_layouts_midpoint(models, tmp_path, capsys):
    cars = np.zeros((256, 256), dtype=bool)
    cars[16:24, 100:140] = True
    out, bank = tmp_path / "gain.png", str(tmp_path / "bank")
    assert main(_cli(models, tmp_path, "--out", str(out), "--bank", bank)) == 0
    static = np.asarray(Image.open(out))
    assert "bank: miss" in capsys.readouterr().out
    assert main(_cli(models, tmp_path, "--out", str(out), "--bank", bank,
                     "--cars", _png(tmp_path / "cars.png", cars))) == 0
    assert "bank: hit" in capsys.readouterr().out  # the scene id is the buildings' alone
    assert not np.array_equal(np.asarray(Image.open(out)), static)  # the tail saw the cars


def test_full_resolution_writes_the_layouts_grid_with_buildings_exactly_zero(models, tmp_path, capsys):
    low, full = tmp_path / "low.png", tmp_path / "full.png"
    assert main(_cli(models, tmp_path, "--out", str(low))) == 0
    assert main(_cli(models, tmp_path, "--out", str(full), "--full-resolution")) == 0
    assert "(256x256, 1 sample" in capsys.readouterr().out
    low_gray = np.asarray(Image.open(low), dtype=np.float64)
    full_gray = np.asarray(Image.open(full), dtype=np.float64)
    assert full_gray.shape == (256, 256) and (full_gray[LAYOUT] == 0).all() and full_gray[~LAYOUT].min() > 0
    # The model's own map, interpolated: within the two 8-bit roundings of the PNGs.
    assert np.abs(255.0 * upsample_gain(low_gray / 255.0, LAYOUT) - full_gray).max() <= 1.01
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"buildings": "buildings.png", "tx": [20, 20]}\n')
    assert main(["predict", "--queries", str(queries), "--out", str(tmp_path / "maps"), "--full-resolution",
                 "--models", str(models / "models"), "--params", str(models / "params.yaml")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "maps" / "00000.png")), full_gray.astype(np.uint8))


def _a_file(folder):
    (folder / "a_file").write_text("not a folder")
    return folder / "a_file"


def test_a_layout_on_a_finer_grid_is_the_same_block_and_answers_on_its_own_grid(models, tmp_path, capsys):
    """A 512 x 512 layout (0.5 m pixels) of the same block: the same model map, and with
    --full-resolution a 512 x 512 map with its buildings exactly 0; a side the model cannot
    divide is refused in one line."""
    fine = np.kron(LAYOUT, np.ones((2, 2), dtype=bool))
    base = _cli(models, tmp_path, "--out", str(tmp_path / "base.png"))
    assert main(base) == 0
    argv = ["predict", "--buildings", _png(tmp_path / "fine.png", fine), "--tx", str(2 * TX[0]), str(2 * TX[1]),
            "--models", str(models / "models"), "--params", str(models / "params.yaml")]
    assert main(argv + ["--out", str(tmp_path / "fine_low.png")]) == 0
    assert (Image.open(tmp_path / "fine_low.png").tobytes() == Image.open(tmp_path / "base.png").tobytes())
    assert main(argv + ["--out", str(tmp_path / "fine_full.png"), "--full-resolution"]) == 0
    full = np.asarray(Image.open(tmp_path / "fine_full.png"))
    assert full.shape == (512, 512) and (full[fine] == 0).all() and full[~fine].min() > 0
    capsys.readouterr()
    odd = np.zeros((100, 100), dtype=bool)
    assert main(["predict", "--buildings", _png(tmp_path / "odd.png", odd), "--tx", "5", "5", "--out",
                 str(tmp_path / "odd_map.png"), "--models", str(models / "models"),
                 "--params", str(models / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "side is a multiple of the model's 32 pixels" in err and not (tmp_path / "odd_map.png").exists()


def _gray_png(path) -> str:
    Image.fromarray(np.full((256, 256), 128, dtype=np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize("change", [
    lambda args, tmp: args[:4] + ["80", "80"] + args[6:],  # Tx in a building
    lambda args, tmp: args[:4] + ["256", "3"] + args[6:],  # Tx out of range
    lambda args, tmp: args[:1] + ["--buildings", _gray_png(tmp / "gray.png")] + args[3:],  # not binary
    lambda args, tmp: args + ["--models", str(tmp / "nowhere")],
    lambda args, tmp: args + ["--samples", "0"],
    lambda args, tmp: args + ["--threads", "0"],
    lambda args, tmp: args + ["--out", str(_a_file(tmp) / "gain.png")],
    lambda args, tmp: args + ["--out", str(tmp / "gain.jpg")],
    lambda args, tmp: args + ["--params", str(tmp / "absent.yaml")],
    lambda args, tmp: args + ["--device", "gpu"],
], ids=["tx-in-building", "tx-out-of-range", "non-binary-png", "missing-models", "zero-samples", "zero-threads",
        "out-under-a-file", "not-png", "missing-params", "bad-device"])
def test_cli_bad_inputs_fail_with_one_line_and_no_file(models, tmp_path, capsys, change):
    out = tmp_path / "gain.png"
    args = change(_cli(models, tmp_path, "--out", str(out)), tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not out.exists() and not list(tmp_path.rglob("*gain*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("how", ["flag", "environment", "params"])
def test_asking_for_cuda_without_one_is_one_line_exit_2_and_no_file(models, tmp_path, capsys, monkeypatch, how):
    out = tmp_path / "gain.png"
    args = _cli(models, tmp_path, "--out", str(out))
    if how == "flag":
        args += ["--device", "cuda"]
    elif how == "environment":
        monkeypatch.setenv("RADIODIFF_DEVICE", "cuda")
    else:
        params = yaml.safe_load((models / "params.yaml").read_text())
        params["flux"]["device"] = "cuda:0"
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        args += ["--params", str(tmp_path / "params.yaml")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no CUDA device is visible" in err[0]
    assert not out.exists()


def test_device_cpu_by_flag_or_environment_writes_the_same_bytes(models, tmp_path, capsys, monkeypatch):
    """`--device cpu` and RADIODIFF_DEVICE=cpu are the CPU path itself, bit for bit."""
    outputs = []
    for name, extra, env in (("plain", [], None), ("flag", ["--device", "cpu"], None), ("env", [], "cpu")):
        if env:
            monkeypatch.setenv("RADIODIFF_DEVICE", env)
        out = tmp_path / f"{name}.png"
        assert main(_cli(models, tmp_path, "--out", str(out), *extra)) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    assert capsys.readouterr().out.count("on cpu)") == 3


def test_params_that_do_not_fit_the_model_are_a_user_error(models):
    with pytest.raises(UserError, match="do not fit"):
        _predictor(models, flux=FluxConfig())  # t_mid 800 of a 50-step model
