"""build_bank -> tune_tail -> evaluate in library terms, on the tiny dataset and toy models."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from radiodiff.bank import MidpointBank
from radiodiff.config import EvaluateConfig, FluxConfig, TailTuneConfig
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.errors import UserError
from radiodiff.evaluation.edited_layouts import edited_maps, edited_originals
from radiodiff.evaluation.methods import Toolkit
from radiodiff.evaluation.scenarios import select_traffic
from radiodiff.artifacts.denoiser import load_ldm, load_tail, save_tail
from radiodiff.artifacts.keys import bank_key
from radiodiff.stages.bank import fill_bank, load_scenes
from radiodiff.stages.evaluate import evaluate, headline, meets_claim, select_maps
from radiodiff.flux import flux_plan, stage2_decode
from radiodiff.metrics import nmse
from radiodiff.options import TailLoss
from radiodiff.stages.latents import LatentDataset, encode_dataset
from radiodiff.stages.tail import _decoded_loss_fn, bank_midpoints, decoded_nmse_loss, train_tail
from radiodiff.training.rng import seeded_generator
from tests.conftest import CONDITION, LOOP, randomised

FLUX = FluxConfig(t_mids=(30, 10), t_mid=30, prefix_steps=2, tail_steps=1, seeds=(0, 1), batch_size=2,
                  nearest_max_distance=1.0, tail_tune=TailTuneConfig(batch_size=4, train=LOOP))
EVALUATE = EvaluateConfig(scenes=1, tx_per_scene=4, ddim_steps=(1, 3), tail_steps=(1, 2), reference_steps=10,
                          traffic_per_scene=2, timing_maps=1, timing_repeats=1, consistency_steps=4)


@pytest.fixture(scope="module")
def flux_setup(dataset, vae_file, ldm_file):
    ldm_path = ldm_file[0]
    model, _, condition = load_ldm(ldm_path, vae_file[0])
    bank_dir = dataset / "bank"
    scenes = load_scenes(dataset / "data", FLUX.splits)
    written = fill_bank(model, ldm_path, bank_dir, scenes, FLUX, condition.channels)
    return model, ldm_path, bank_dir, scenes, written


def test_bank_holds_every_scene_seed_and_t_mid_once(flux_setup):
    model, ldm_path, bank_dir, scenes, written = flux_setup
    assert len(scenes.ids) == 4 and written == 4 * len(FLUX.seeds) * len(FLUX.t_mids)
    assert fill_bank(model, ldm_path, bank_dir, scenes, FLUX, CONDITION.channels) == 0  # resumes: nothing new
    bank = MidpointBank(bank_dir, bank_key(model, ldm_path, FLUX, 30))
    latent = bank.get(int(scenes.ids[0]), seed=1)
    assert latent.shape == (3, 8, 8) and latent.dtype == np.float32
    # another prefix is another key: nothing served across it
    other = FluxConfig(**{**FLUX.__dict__, "prefix_steps": 3})
    assert len(MidpointBank(bank_dir, bank_key(model, ldm_path, other, 30))) == 0


def test_tail_tunes_saves_and_refuses_a_foreign_denoiser(flux_setup, dataset, tmp_path):
    model, ldm_path, bank_dir, _, _ = flux_setup
    result = train_tail(model, FLUX, CONDITION, ldm_path=ldm_path, dataset_dir=dataset / "data", bank_dir=bank_dir,
                        work_dir=tmp_path, log=lambda m, s: None, progress=False)
    assert result.step == LOOP.total_steps and "flux_nmse" in result.val_metrics
    path = tmp_path / "tail.pt"
    save_tail(path, result.ema.ema_model, FLUX, ldm_path)
    tail = load_tail(path, ldm_path, model)
    changed = any(not torch.equal(a, b) for a, b in zip(tail.state_dict().values(), model.unet.state_dict().values()))
    assert changed
    foreign = tmp_path / "other_ldm.pt"
    foreign.write_bytes(ldm_path.read_bytes() + b"\0")
    with pytest.raises(UserError, match="another denoiser"):
        load_tail(path, foreign, model)


def test_tail_tuning_needs_the_train_midpoints(flux_setup, dataset, tmp_path):
    model, ldm_path, _, _, _ = flux_setup
    with pytest.raises(UserError, match="run build_bank"):
        train_tail(model, FLUX, CONDITION, ldm_path=ldm_path, dataset_dir=dataset / "data", bank_dir=tmp_path / "none",
                   work_dir=tmp_path, log=lambda m, s: None, progress=False)


def test_evaluate_runs_every_method_on_the_same_maps(flux_setup, dataset):
    model, ldm_path, bank_dir, _, _ = flux_setup
    test = RadioMapDataset(dataset / "data", "test", CONDITION.encodings)
    maps = select_maps(test, EVALUATE)
    assert len(set(maps.maps)) == 1 and len(maps.maps) == 4
    traffic = select_traffic(test, sorted(set(maps.maps)), EVALUATE.traffic_per_scene)
    assert len(traffic.maps) == 4 and traffic.cond[:2, 2].eq(0).all() and traffic.cond[2:, 2].gt(0).any()
    kit = Toolkit(model, maps, FLUX, ldm_path, bank_dir, None,
                  frozenset(load_scenes(dataset / "data", ["test"]).ids.tolist()), CONDITION.encodings)
    train = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    edited = edited_maps(edited_originals(train.index, 1), (0.2, 1.0), int(maps.cond.shape[-1]), CONDITION.encodings)
    result = evaluate(kit, EVALUATE, lambda cond: cond[:, :1] * 0.5, dataset_dir=dataset / "data", traffic=traffic,
                      edited=edited, progress=False)
    table = result.table.set_index("method")
    expected = {"ddpm_full", "ddim_10", "ddim_1", "ddim_3", "flux_t30_tail1", "flux_t30_tail2", "flux_t10_tail1",
                "control_t30_tail1", "flux_nearest_t10_tail1", "flux_nearest_any_t30_tail1", "flux_cell_t30_tail1",
                "baseline"}
    assert expected <= set(table.index)
    assert table.loc["ddpm_full", "nmse_loss"] == 0 and table.loc["ddpm_full", "speedup_b1"] == pytest.approx(1)
    assert table.loc["baseline", "nmse_ci95"] == 0  # deterministic: identical over seeds
    assert np.isfinite(table[["nmse", "ssim", "ms_per_map_b1", "ms_per_map_batch"]].to_numpy()).all()
    # one lookup per layout and seed, never the layout's own midpoint
    assert table.loc["flux_nearest_t10_tail1", "bank_nearest"] == len(FLUX.seeds)
    assert result.consistency["t"].tolist() == [33, 16, 0, -1]  # the step each DDIM-4 step lands on
    assert {"flux_speedup_b1", "flux_nmse_loss", "baseline_nmse", "simulator_ms_per_map_b1"} <= set(result.headline)
    head = result.headline
    assert head["flux_over_baseline_nmse"] == pytest.approx(head["flux_nmse"] / head["baseline_nmse"])
    assert set(result.figures) == {"evaluate_tradeoff.png", "evaluate_consistency.png", "evaluate_samples.png",
                                   "evaluate_traffic.png", "evaluate_new_layout.png", "evaluate_nmse_histogram.png"}
    # the spread of per-map NMSE beside the mean; deterministic baseline: its p90 is at least its median
    spread = table[["nmse_median", "nmse_pooled", "nmse_p90", "nmse_dark"]]
    assert np.isfinite(spread.to_numpy()).all() and (table["nmse_p90"] >= table["nmse_median"]).all()
    histogram = result.histogram
    assert {"ddpm_full", "baseline"} <= set(histogram["method"])
    assert (histogram.groupby("method")["maps"].sum() == len(maps.maps)).all()  # every map in one bin
    # the paper's axis: R = 1 - t_mid / T of the 50-step toy process; the prefix's 2 calls saved of 3
    assert table.loc["flux_t30_tail1", "reuse_ratio"] == pytest.approx(0.4)
    assert table.loc["flux_t30_tail1", "reuse_calls"] == pytest.approx(2 / 3)
    assert table.loc["control_t30_tail1", "reuse_calls"] == 0 and np.isnan(table.loc["ddim_3", "reuse_ratio"])
    assert table.loc["ddim_10", "family"] == "reference"
    scenarios = result.scenarios
    assert set(scenarios["scenario"]) == {"tx_moved", "traffic", "new_layout"}
    traffic_rows = scenarios[scenarios["scenario"] == "traffic"].set_index("method")
    assert {"ddim_10", "ddim_1", "ddim_3", "flux_t30_tail1", "flux_t10_tail1", "control_t30_tail1",
            "baseline"} == set(traffic_rows.index)
    assert np.isfinite(traffic_rows["car_response"].to_numpy()).all()
    # the baseline stand-in reads only the buildings channel: it cannot see the cars
    assert traffic_rows.loc["baseline", "car_response"] == 0
    flux_counts = scenarios["counts"][scenarios["family"].str.startswith("flux")]
    assert set(flux_counts) == {result.headline["flux_counts"]} and scenarios["counts"][~scenarios["family"]
                                                                                          .str.startswith("flux")].isna().all()
    new_layout = scenarios[scenarios["scenario"] == "new_layout"]["method"].tolist()
    assert {"flux_t30_tail1", "flux_nearest_t30_tail1", "flux_nearest_any_t30_tail1"} <= set(new_layout)
    assert "flux_nearest_t30_tail1" not in set(scenarios[scenarios["scenario"] == "tx_moved"]["method"])
    assert {"traffic_flux_car_response", "traffic_t100_car_response", "new_layout_maps",
            "new_layout_cold_paths"} <= set(result.headline)
    assert result.headline["flux_meets_claim"] <= result.headline["flux_counts"]
    # the edited banked layouts join the test layouts on the distance axis, all within this bound of 1
    assert result.new_layout["maps"].sum() == len(maps.maps) + 2 and result.new_layout["edited_maps"].sum() == 2
    assert head["new_layout_edited_maps"] == 2 and head["new_layout_maps_within_bound"] == len(maps.maps) + 2
    assert head["new_layout_cold_paths"] == 0 and np.isfinite(head["new_layout_nearest_vs_own_within"])


def _table(flux_nmse_loss: float, full_tx_response: float) -> pd.DataFrame:
    rows = [("ddpm_full", "full", 1000, 0.10, full_tx_response, 0.0, 1000.0),
            ("ddim_1", "ddim", 1, 0.11, 0.9, 0.1, 10.0),
            ("flux_t30_tail1", "flux", 1, 0.10 * (1 + flux_nmse_loss), 0.9, flux_nmse_loss, 12.0),
            ("baseline", "baseline", 0, 0.09, 0.9, -0.1, 5.0)]
    table = pd.DataFrame(rows, columns=["method", "family", "unet_calls_per_map", "nmse", "tx_response",
                                        "nmse_loss", "ms_per_map_b1"])
    return table.assign(ssim=0.9, ssim_loss=0.001, nmse_loss_ci95=0.0, ssim_loss_ci95=0.0,
                        speedup_b1=1000.0 / table["ms_per_map_b1"], speedup_batch=50.0,
                        speedup_t100_b1=100.0 / table["ms_per_map_b1"], reuse_ratio=0.4)


@pytest.mark.parametrize("nmse_loss,tx_response,meets", [(0.01, 0.9, True), (0.03, 0.9, False), (0.01, 0.5, False)])
def test_headline_counts_the_claim_only_within_its_bounds_and_on_a_tx_aware_model(nmse_loss, tx_response, meets):
    plain = FluxConfig(**{**FLUX.__dict__, "use_tuned_tail": False})
    head = headline(_table(nmse_loss, tx_response), plain)
    assert meets_claim(head) == float(meets)
    # a reference deaf to the cars (traffic pairs) makes Flux not count: the claim falls with it
    assert meets_claim(head | {"flux_counts": 0.0}) == 0.0
    assert head["flux_speedup_b1"] == pytest.approx(1000 / 12)
    assert head["ddim_same_calls_nmse"] == pytest.approx(0.11)
    assert ("flux_vs_ddim_speedup_b1" in head) == (0.10 * (1 + nmse_loss) >= 0.11)


def test_cell_representative_is_the_free_pixel_nearest_the_cell_centre(dataset, flux_setup):
    from radiodiff.evaluation.methods import _representative_condition

    model, ldm_path, bank_dir, _, _ = flux_setup
    maps = select_maps(RadioMapDataset(dataset / "data", "test", CONDITION.encodings), EVALUATE)
    kit = Toolkit(model, maps, FLUX, ldm_path, bank_dir, None, frozenset(), CONDITION.encodings)
    buildings = maps.buildings([0])[0]
    for cell in [(0, 0), (1, 1), (0, 1)]:
        cond = _representative_condition(kit, 0, cell, 16)
        row, col = divmod(int(cond[0, 1].argmax()), cond.shape[-1])
        assert row // 16 == cell[0] and col // 16 == cell[1] and not buildings[row, col]
        free = [(r, c) for r in range(cell[0] * 16, cell[0] * 16 + 16) for c in range(cell[1] * 16, cell[1] * 16 + 16)
                if not buildings[r, c]]
        centre = (cell[0] * 16 + 7.5, cell[1] * 16 + 7.5)
        best = min(np.hypot(r - centre[0], c - centre[1]) for r, c in free)
        assert np.hypot(row - centre[0], col - centre[1]) == pytest.approx(best)
        assert torch.equal(cond[0, 0], maps.cond[0, 0])  # same layout, the representative's Tx


@pytest.fixture(scope="module")
def kc_setup(dataset, vae_file, kc_ldm_file):
    ldm_path = kc_ldm_file[0]
    model, _, condition = load_ldm(ldm_path, vae_file[0])
    bank_dir = dataset / "bank"  # shared with the discrete model's entries: keys keep them apart
    written = fill_bank(model, ldm_path, bank_dir, load_scenes(dataset / "data", FLUX.splits), FLUX, condition.channels)
    return model, ldm_path, bank_dir, written


@pytest.fixture(scope="module")
def flow_setup(dataset, vae_file, flow_ldm_file):
    ldm_path = flow_ldm_file[0]
    model, _, condition = load_ldm(ldm_path, vae_file[0])
    bank_dir = dataset / "bank"
    written = fill_bank(model, ldm_path, bank_dir, load_scenes(dataset / "data", FLUX.splits), FLUX, condition.channels)
    return model, ldm_path, bank_dir, written


def test_flow_midpoints_share_the_bank_under_their_own_key(flow_setup, kc_setup):
    model, ldm_path, bank_dir, written = flow_setup
    assert written == 4 * len(FLUX.seeds) * len(FLUX.t_mids)  # none collided with kc's at the same t
    key = bank_key(model, ldm_path, FLUX, 30)
    kc_key = bank_key(kc_setup[0], kc_setup[1], FLUX, 30)
    assert key.t_mid == kc_key.t_mid == 0.6 and key != kc_key
    assert len(MidpointBank(bank_dir, key)) == 4 * len(FLUX.seeds)


def test_tail_tuning_runs_on_flow_matching(flow_setup, dataset, tmp_path):
    model, ldm_path, bank_dir, _ = flow_setup
    result = train_tail(model, FLUX, CONDITION, ldm_path=ldm_path, dataset_dir=dataset / "data", bank_dir=bank_dir,
                        work_dir=tmp_path, log=lambda m, s: None, progress=False)
    assert result.step == LOOP.total_steps and np.isfinite(result.val_metrics["flux_nmse"])


def test_the_bank_keys_a_kc_model_on_continuous_time(kc_setup, flux_setup):
    model, ldm_path, bank_dir, written = kc_setup
    assert written == 4 * len(FLUX.seeds) * len(FLUX.t_mids)
    key = bank_key(model, ldm_path, FLUX, 30)
    assert key.t_mid == 0.6 and len(MidpointBank(bank_dir, key)) == 4 * len(FLUX.seeds)
    discrete_model, discrete_path = flux_setup[0], flux_setup[1]
    assert bank_key(discrete_model, discrete_path, FLUX, 30).t_mid == 30.0


def test_tail_tuning_runs_on_the_decoupled_objective(kc_setup, dataset, tmp_path):
    model, ldm_path, bank_dir, _ = kc_setup
    result = train_tail(model, FLUX, CONDITION, ldm_path=ldm_path, dataset_dir=dataset / "data", bank_dir=bank_dir,
                        work_dir=tmp_path, log=lambda m, s: None, progress=False)
    assert result.step == LOOP.total_steps and np.isfinite(result.val_metrics["flux_nmse"])
    assert np.isfinite(result.train_loss)


def test_evaluate_sets_every_objective_side_by_side(flux_setup, kc_setup, flow_setup, dataset):
    import dataclasses

    model, ldm_path, bank_dir, _, _ = flux_setup
    maps = select_maps(RadioMapDataset(dataset / "data", "test", CONDITION.encodings), EVALUATE)
    # the served model's one-step copy has its own weights (its tuned row must equal ddim_1),
    # the others' random ones (their tuned rows must differ from their plain ones)
    kit = Toolkit(model, maps, FLUX, ldm_path, bank_dir, None,
                  frozenset(load_scenes(dataset / "data", ["test"]).ids.tolist()), CONDITION.encodings,
                  few_step=copy.deepcopy(model.unet))
    others = [dataclasses.replace(kit, model=setup[0], ldm_path=setup[1], banks={}, label=label,
                                  few_step=randomised(copy.deepcopy(setup[0].unet), 5))
              for setup, label in ((kc_setup, "kc"), (flow_setup, "flow"))]
    result = evaluate(kit, EVALUATE, lambda cond: cond[:, :1] * 0.5, dataset_dir=dataset / "data", others=others,
                      progress=False)
    table = result.table.set_index("method")
    assert {"ddpm_full", "ddim_1", "decoupled_1", "decoupled_3", "flux_kc_t30_tail1", "flux_kc_t10_tail2",
            "flux_t30_tail1", "baseline"} <= set(table.index)
    assert table.loc["decoupled_3", "family"] == "decoupled" and table.loc["flux_kc_t30_tail1", "family"] == "flux_kc"
    assert table.loc["decoupled_1", "unet_calls_per_map"] == 1
    assert {"flow_1", "flow_3", "flux_flow_t30_tail1", "flux_flow_t10_tail2"} <= set(table.index)
    assert table.loc["flow_3", "family"] == "flow" and table.loc["flux_flow_t30_tail1", "family"] == "flux_flow"
    # flow matching also through Heun: two network calls a step, and a different map than Euler's
    assert table.loc["flow_heun_3", "family"] == "flow_heun" and table.loc["flow_heun_3", "unet_calls_per_map"] == 5
    assert table.loc["flow_heun_3", "nmse"] != table.loc["flow_3", "nmse"]
    assert not {"flow_heun_1", "ddim_heun_3", "decoupled_heun_3"} & set(table.index)  # heun_1 is flow_1
    # the objectives are different models: their rows differ
    assert len({table.loc[name, "nmse"] for name in ("decoupled_3", "ddim_3", "flow_3")}) == 3
    assert {"decoupled_1_nmse", "decoupled_5_nmse"} & set(result.headline) == {"decoupled_1_nmse"}
    assert result.headline["flux_kc_nmse"] == table.loc["flux_kc_t30_tail1", "nmse"]
    assert result.headline["flow_1_nmse"] == table.loc["flow_1", "nmse"]
    assert result.headline["flux_flow_nmse"] == table.loc["flux_flow_t30_tail1", "nmse"]
    # the control of the tail's fine-tuning: each objective's one-step sampler run by its tuned copy
    tuned = table[table["family"] == "few_step_tuned"]
    assert set(tuned.index) == {"ddim_1_tuned", "decoupled_1_tuned", "flow_1_tuned"}
    assert (tuned["unet_calls_per_map"] == 1).all()
    assert table.loc["ddim_1_tuned", "nmse"] == table.loc["ddim_1", "nmse"]
    assert table.loc["flow_1_tuned", "nmse"] != table.loc["flow_1", "nmse"]
    assert result.headline["tuned_same_calls_nmse"] == tuned["nmse"].min()
    served = table.loc["flux_t30_tail1", "nmse"]
    assert result.headline["flux_vs_tuned_same_calls_nmse_change"] == pytest.approx(served / tuned["nmse"].min() - 1)
    assert result.headline["flow_1_tuned_nmse"] == table.loc["flow_1_tuned", "nmse"]


def test_the_decoded_loss_is_the_nmse_of_the_served_maps_and_trains_only_the_tail(flux_setup, dataset):
    model, ldm_path, bank_dir, scenes, _ = flux_setup
    model = dataclasses.replace(model, vae=copy.deepcopy(model.vae))  # the loss freezes its VAE
    tail = randomised(copy.deepcopy(model.unet), seed=3)
    train = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    batch = torch.utils.data.default_collate([train[i] for i in range(4)])
    midpoints = bank_midpoints(model, ldm_path, bank_dir, FLUX, scenes.ids)
    z_mid = midpoints[FLUX.t_mids.index(FLUX.t_mid), 0, [list(scenes.ids).index(m) for m in batch["map_id"].tolist()]]
    plan = flux_plan(model.process, FLUX.t_mid, FLUX.prefix_steps, FLUX.tail_steps)
    served = stage2_decode(model, z_mid, batch["cond"], plan, denoise_fn=lambda x, t: tail(x, t, batch["cond"]))
    loss = decoded_nmse_loss(model, tail, z_mid, plan.tail, batch["cond"], batch["gain"])
    torch.testing.assert_close(loss, nmse(served, batch["gain"]).mean())
    # the stage's loss: the served t_mid only, gradients in the tail and none in the VAE
    seen = []

    def recording(x_t, t, cond):
        seen.append(torch.as_tensor(t))
        return tail(x_t, t, cond)

    decoded = FluxConfig(**{**FLUX.__dict__, "tail_tune": TailTuneConfig(batch_size=4, loss=TailLoss.DECODED)})
    scene_row = {int(s): i for i, s in enumerate(scenes.ids)}
    loss, _ = _decoded_loss_fn(model, decoded, midpoints, scene_row)(recording, batch, 0, seeded_generator(0))
    loss.backward()
    served_time = model.process.config_time(FLUX.t_mid)
    assert len(seen) == FLUX.tail_steps and all((t == served_time).all() for t in seen)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tail.parameters())
    assert all(p.grad is None for p in model.vae.parameters())


def test_the_tail_tunes_on_the_decoded_loss(flux_setup, dataset, tmp_path):
    model, ldm_path, bank_dir, _, _ = flux_setup
    model = dataclasses.replace(model, vae=copy.deepcopy(model.vae))
    decoded = FluxConfig(**{**FLUX.__dict__, "tail_tune": TailTuneConfig(batch_size=4, train=LOOP,
                                                                         loss=TailLoss.DECODED)})
    result = train_tail(model, decoded, CONDITION, ldm_path=ldm_path, dataset_dir=dataset / "data",
                        bank_dir=bank_dir, work_dir=tmp_path, log=lambda m, s: None, progress=False)
    assert result.step == LOOP.total_steps and np.isfinite(result.train_loss)
    assert any(not torch.equal(a, b) for a, b in zip(result.ema.ema_model.state_dict().values(),
                                                     model.unet.state_dict().values()))


def test_the_path_loss_weight_adds_the_latent_path_loss_to_the_decoded_one(flux_setup, dataset):
    model, ldm_path, bank_dir, scenes, _ = flux_setup
    model = dataclasses.replace(model, vae=copy.deepcopy(model.vae))
    train = RadioMapDataset(dataset / "data", "train", CONDITION.encodings)
    latents = LatentDataset(train, encode_dataset(model, train))
    batch = torch.utils.data.default_collate([latents[i] for i in range(4)])
    midpoints = bank_midpoints(model, ldm_path, bank_dir, FLUX, scenes.ids)
    scene_row = {int(s): i for i, s in enumerate(scenes.ids)}
    tune = TailTuneConfig(batch_size=4, loss=TailLoss.DECODED, path_loss_weight=0.5)
    weighted = FluxConfig(**{**FLUX.__dict__, "tail_tune": tune})
    loss, parts = _decoded_loss_fn(model, weighted, midpoints, scene_row)(model.unet, batch, 0, seeded_generator(0))
    assert parts["path_loss"] > 0 and parts["decoded_loss"] > 0
    assert float(loss.detach()) == pytest.approx(parts["decoded_loss"] + 0.5 * parts["path_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="adds to the decoded loss"):
        TailTuneConfig(loss=TailLoss.DIFFUSION, path_loss_weight=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        TailTuneConfig(loss=TailLoss.DECODED, path_loss_weight=-1.0)
