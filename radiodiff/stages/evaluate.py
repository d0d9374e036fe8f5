"""evaluate: every method on the same test maps in one run, repeated over seeds, timed side by side.

Accuracy: each method runs on the whole map set once per seed (that run is also its full-batch
timing); NMSE/RMSE/SSIM/PSNR and the Tx-response ratio per seed, then mean and 95% interval
over seeds; accuracy loss against the full DDPM trajectory paired by seed. Speed: batch-1 ms
per map in interleaved rounds. A Flux result counts only where the full trajectory responds to
the Tx (ratio >= `MIN_TX_RESPONSE`) and, with traffic pairs, the T = 100 reference to the cars
(ratio >= `MIN_CAR_RESPONSE`): a model that ignores either makes reuse look free.

The main run is the `tx_moved` scenario; `traffic` runs its own methods on the traffic pairs
of the same layouts, and `new_layout` reads the nearest-layout rows of the main run against
each layout's distance to its nearest banked neighbour (see `evaluation/scenarios.py`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from radiodiff.config import EvaluateConfig, FluxConfig
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.devices import device_name, synchronize
from radiodiff.evaluation.consistency import trajectory_similarity
from radiodiff.evaluation.distribution import histogram_rows, map_energy, nmse_distribution
from radiodiff.evaluation.methods import (
    MapSet, Method, Toolkit, control, flux_cell, flux_hit, flux_nearest, from_noise, supervised, tuned_few_step,
)
from radiodiff.evaluation.scenarios import (
    EDITED_FAMILIES, MIN_CAR_RESPONSE, autoencoder_car_response, chosen_layouts, edited_methods, load_rows,
    nearest_distances, new_layout_summary, nmse_score, reuse_columns, static_rows, traffic_methods, traffic_scores,
)
from radiodiff.evaluation.stats import interval, relative_loss
from radiodiff.evaluation.timing import time_interleaved
from radiodiff.metrics import nmse, psnr, rmse, ssim, tx_response_ratio

MIN_TX_RESPONSE = 0.8
# The few-step samplers Flux must beat, the ones fine-tuned with the tail's extra training included.
FEW_STEP_FAMILIES = ("ddim", "decoupled", "flow", "flow_heun", "few_step_tuned")
METRICS = ("nmse", "rmse", "ssim", "psnr", "tx_response")


def select_maps(dataset: RadioMapDataset, cfg: EvaluateConfig) -> MapSet:
    """The first `tx_per_scene` static samples of `scenes` layouts spread evenly over `dataset`'s
    (the `tx_moved` maps; `scenarios.select_traffic` takes the same layouts' traffic pairs)."""
    return load_rows(dataset, static_rows(dataset.index, chosen_layouts(dataset.index, cfg.scenes), cfg.tx_per_scene))


def full_method(kit: Toolkit) -> Method | None:
    """The process's full trajectory (DDPM over all T steps), where it has one."""
    reference = kit.model.process.full_trajectory()
    if reference is None:
        return None
    process, steps = reference
    return from_noise(kit, kit.model.with_process(process), steps, family="full")


def sampler_methods(kit: Toolkit, cfg: EvaluateConfig, *, reference: bool = True) -> list[Method]:
    """The whole sampler from noise: the full trajectory where the process has one, with
    `reference` the published T = `reference_steps` reference, then the process's own sampler
    with each of `ddim_steps` steps."""
    model = kit.model
    full = full_method(kit)
    methods = [full] if full is not None else []
    if reference:
        methods.append(from_noise(kit, model, cfg.reference_steps, family="reference"))
    methods += [from_noise(kit, model, n, family=model.process.name) for n in cfg.ddim_steps]
    second = model.process.second_order()
    if second is not None:  # the same model through a two-call sampler (flow: Heun), `{name}_heun_{steps}`;
        heun = model.with_process(second)  # one step of it is the first-order step, so from two on
        methods += [from_noise(kit, heun, n, family=f"{model.process.name}_{second.spec()['sampler']}")
                    for n in cfg.ddim_steps if n >= 2]
    return methods


def flux_methods(kit: Toolkit, cfg: EvaluateConfig, *, variants: bool = True) -> list[Method]:
    """Flux (plain and tuned tail) per t_mid and tail; with `variants`, also nearest-scene Flux
    and the full-condition control per t_mid, and at the served t_mid the nearest layout at any
    distance (`new_layout`) and Flux keyed by a coarse Tx cell."""
    flux, methods = kit.flux, []
    served_tuned = kit.tail is not None and flux.use_tuned_tail
    for t_mid in flux.t_mids:
        # the served tail always: the headline and the traffic rows read its timing
        tails = [k for k in sorted({*cfg.tail_steps, flux.tail_steps}) if k <= t_mid + 1]
        methods += [flux_hit(kit, t_mid, k, tuned=False) for k in tails]
        if kit.tail is not None:
            methods += [flux_hit(kit, t_mid, k, tuned=True) for k in tails]
        if not variants:
            continue
        methods.append(control(kit, t_mid, flux.tail_steps))
        methods.append(flux_nearest(kit, t_mid, flux.tail_steps, tuned=served_tuned))
        if t_mid != flux.t_mid:
            continue
        methods.append(flux_nearest(kit, t_mid, flux.tail_steps, tuned=served_tuned, any_distance=True))
        for tuned in (False, True) if kit.tail is not None else (False,):
            methods.append(flux_cell(kit, t_mid, flux.tail_steps, cell_px=cfg.tx_cell_px, tuned=tuned))
    return methods


def build_methods(kit: Toolkit, cfg: EvaluateConfig, baseline, others: Sequence[Toolkit] = ()) -> list[Method]:
    """Every method of the served model (its samplers, Flux and its variants), the samplers and
    plain Flux of each of the `others` objectives' models, each model's sampler at the tail's
    calls run by its fine-tuned copy where it has one (`Toolkit.few_step`), and the supervised
    baseline."""
    methods = sampler_methods(kit, cfg)
    for other in others:
        methods += sampler_methods(other, cfg, reference=False)
    # tuned at the served tail's calls per query (tune_few_step): run at those
    methods += [tuned_few_step(k, kit.flux.tail_steps) for k in (kit, *others) if k.few_step is not None]
    methods += flux_methods(kit, cfg)
    for other in others:
        methods += flux_methods(other, cfg, variants=False)
    methods.append(supervised("baseline", baseline, kit))
    return methods


def reference_name(rows: Iterable[tuple[str, str, int]]) -> str:
    """The method every loss is measured against, of (method, family, network calls per map)
    rows: the full trajectory (family `full`), else the T = 100 reference (family `reference`),
    else the few-step sampler with the most calls."""
    rows = list(rows)
    for wanted in ("full", "reference"):
        named = [name for name, family, _ in rows if family == wanted]
        if named:
            return named[0]
    return max((calls, i, name) for i, (name, family, calls) in enumerate(rows) if family in FEW_STEP_FAMILIES)[2]


@dataclass(frozen=True)
class AccuracyRun:
    """Per method: metrics per seed `{metric: [value per seed]}`, full-batch ms/map per seed,
    the seed-0 predictions `[N, 1, H, W]` (for figures), per-map NMSE `[seeds, N]` and bank
    lookup counts of these runs."""

    per_seed: dict[str, dict[str, list[float]]]
    batch_ms: dict[str, list[float]]
    first_predictions: dict[str, torch.Tensor]
    bank_counts: dict[str, dict[str, int]]
    per_map_nmse: dict[str, np.ndarray]


def run_accuracy(methods: list[Method], maps: MapSet, seeds: tuple[int, ...], progress, *, score=None,
                 metrics: tuple[str, ...] = METRICS) -> AccuracyRun:
    """Every method on every map, once per seed; seeds outermost so methods interleave in time.
    `score(pred, maps)` gives the `metrics` of one run (default: `map_scores`)."""
    score = score or map_scores
    per_seed = {m.name: {k: [] for k in metrics} for m in methods}
    batch_ms: dict[str, list[float]] = {m.name: [] for m in methods}
    per_map: dict[str, list[np.ndarray]] = {m.name: [] for m in methods}
    first: dict[str, torch.Tensor] = {}
    rows = list(range(len(maps.maps)))
    for seed in seeds:
        for method in methods:
            started = time.perf_counter()
            with torch.no_grad():
                pred = method.run(seed, rows)
            synchronize(pred.device)  # a GPU's queued work is part of the time
            batch_ms[method.name].append((time.perf_counter() - started) * 1e3 / len(rows))
            pred = pred.float().cpu()
            scores = score(pred, maps)
            for key in metrics:
                per_seed[method.name][key].append(scores[key])
            per_map[method.name].append(nmse(pred, maps.gain).numpy())
            first.setdefault(method.name, pred)
            progress(method.name, seed)
    return AccuracyRun(per_seed, batch_ms, first, {m.name: dict(m.stats) for m in methods},
                       {name: np.stack(rows) for name, rows in per_map.items()})


def map_scores(pred: torch.Tensor, maps: MapSet) -> dict[str, float]:
    """Mean NMSE/RMSE/SSIM/PSNR over the maps and the Tx-response ratio."""
    target = maps.gain
    return {"nmse": float(nmse(pred, target).mean()), "rmse": float(rmse(pred, target).mean()),
            "ssim": float(ssim(pred, target).mean()), "psnr": float(psnr(pred, target).mean()),
            "tx_response": tx_response_ratio(pred, target, maps.maps)}


def batch1_timing(methods: list[Method], cfg: EvaluateConfig, seed: int) -> dict[str, dict[str, float]]:
    """ms per map at batch 1: `timing_maps` single-map calls per method and round (one for the
    full trajectory, which is ~T times slower), rounds interleaved."""
    counts = {m.name: 1 if m.family == "full" else cfg.timing_maps for m in methods}

    def job(method: Method):
        def run():
            with torch.no_grad():
                for row in range(counts[method.name]):
                    synchronize(method.run(seed, [row]).device)  # each query is answered before the next
        return run

    return time_interleaved({m.name: job(m) for m in methods}, cfg.timing_repeats, counts)


def summary_table(methods: list[Method], accuracy: AccuracyRun, batch1: dict[str, dict[str, float]], *,
                  num_train_steps: int, prefix_calls: int, metrics: tuple[str, ...] = METRICS,
                  speed_reference: str | None = None, energy: np.ndarray | None = None) -> pd.DataFrame:
    """One row per method: means and 95% half-widths of `metrics`, with the maps' `energy`
    (sum gt^2 per map) the spread of per-map NMSE (median, pooled, p90, dark maps: see
    `evaluation.distribution`), losses vs the full
    trajectory, timings (`batch1` may come from another run of the same methods: a traffic
    query costs what a moved-Tx query does), speedups vs the full trajectory, the T = 100
    reference and the fastest few-step sampler as accurate, and the reuse ratios. Speedups
    `speedup_b1`/`speedup_batch` are against `speed_reference` (default: the loss reference);
    `speedup_batch` is NaN when that method is not in this run."""
    full = reference_name((m.name, m.family, m.unet_calls) for m in methods)
    reference = accuracy.per_seed[full]
    speed = speed_reference or full
    full_ms = batch1[speed]["ms_median"]
    full_batch_ms = float(np.median(accuracy.batch_ms[speed])) if speed in accuracy.batch_ms else float("nan")
    t100 = next((m.name for m in methods if m.family == "reference"), None)
    rows = []
    for method in methods:
        scores = accuracy.per_seed[method.name]
        row = {"method": method.name, "family": method.family, "t_mid": method.t_mid,
               "tail_steps": method.tail_steps, "unet_calls_per_map": method.unet_calls}
        row.update(reuse_columns(method, num_train_steps, prefix_calls))
        for key in metrics:
            row[key], row[f"{key}_ci95"] = interval(scores[key])
        if energy is not None:
            row.update(nmse_distribution(accuracy.per_map_nmse[method.name], energy))
        row["nmse_loss"], row["nmse_loss_ci95"] = relative_loss(scores["nmse"], reference["nmse"], higher_is_better=False)
        row["ssim_loss"], row["ssim_loss_ci95"] = relative_loss(scores["ssim"], reference["ssim"], higher_is_better=True)
        row["ms_per_map_b1"] = batch1[method.name]["ms_median"]
        row["ms_per_map_b1_min"], row["ms_per_map_b1_max"] = batch1[method.name]["ms_min"], batch1[method.name]["ms_max"]
        row["ms_per_map_batch"] = float(np.median(accuracy.batch_ms[method.name]))
        row["speedup_b1"] = full_ms / row["ms_per_map_b1"]
        row["speedup_batch"] = full_batch_ms / row["ms_per_map_batch"]
        row["speedup_t100_b1"] = batch1[t100]["ms_median"] / row["ms_per_map_b1"] if t100 else float("nan")
        row.update({f"bank_{k}": v for k, v in accuracy.bank_counts[method.name].items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    table["speedup_vs_few_step_b1"] = [_vs_few_step(table, nmse_value, ms) for nmse_value, ms in
                                       zip(table["nmse"], table["ms_per_map_b1"])]
    return table


def _vs_few_step(table: pd.DataFrame, nmse_value: float, ms: float) -> float:
    """ms of the fastest few-step sampler at least as accurate (NMSE <=), over `ms`; NaN if none is."""
    few_step = table[table["family"].isin(FEW_STEP_FAMILIES) & (table["nmse"] <= nmse_value)]
    return float(few_step["ms_per_map_b1"].min() / ms) if len(few_step) else float("nan")


def consistency_rows(kit: Toolkit, cfg: EvaluateConfig, seed: int) -> pd.DataFrame:
    """Within- vs across-scene latent similarity along a DDIM trajectory (see consistency.py)."""
    with torch.no_grad():
        rows = trajectory_similarity(kit.model, kit.maps.cond, list(kit.maps.maps), steps=cfg.consistency_steps,
                                     seed=seed)
    return pd.DataFrame(rows)


def simulator_timing(dataset_dir: Path, maps: MapSet, repeats: int) -> dict[str, float]:
    """ms per map of the propagation simulator on the first evaluated layout at 256 x 256:
    one Tx (city set-up included) and amortised over that layout's evaluated Tx."""
    from radiodiff.data.geometry import load_geometry
    from radiodiff.data.targets import simulated_gray

    scene = load_geometry().scene(maps.maps[0])
    index = RadioMapDataset(dataset_dir, "test", ()).index
    tx_ids = index[index["map_id"] == maps.maps[0]]["tx_id"].tolist()[: maps.maps.count(maps.maps[0])]
    pixels = [scene.tx(k) for k in tx_ids]
    single, amortised = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        simulated_gray(scene, pixels[:1], dynamic=False)
        single.append((time.perf_counter() - started) * 1e3)
        started = time.perf_counter()
        simulated_gray(scene, pixels, dynamic=False)
        amortised.append((time.perf_counter() - started) * 1e3 / len(pixels))
    return {"simulator_ms_per_map_b1": float(np.median(single)), "simulator_ms_per_map_amortised": float(np.median(amortised))}


def headline(table: pd.DataFrame, flux: FluxConfig, others: Sequence[tuple[str, str]] = ()) -> dict[str, float]:
    """The headline figures of the `tx_moved` table: the served Flux setting against the full
    trajectory, the T = 100 reference and the fastest few-step sampler (DDIM, decoupled or flow)
    at least as accurate, the best few-step sampler at its network calls with and without the
    tail's extra fine-tuning (`*_same_calls_*`), LDM vs baseline, and for each other objective
    in `others` (its sampler's name, its label: ("decoupled", "kc"), ("flow", "flow")) its 1- and 5-step samplers
    and plain Flux when evaluated."""
    by_name = table.set_index("method")
    full = by_name.loc[reference_name(zip(table["method"], table["family"], table["unet_calls_per_map"]))]
    served = by_name.loc[_served_name(table, flux)]
    few_step = table[table["family"].isin(FEW_STEP_FAMILIES)]
    as_good = few_step[few_step["nmse"] <= served["nmse"]].sort_values("ms_per_map_b1")
    generative = table[table["family"] != "baseline"].sort_values("nmse").iloc[0]
    out = {
        "full_tx_response": float(full["tx_response"]),
        "flux_counts": float(full["tx_response"] >= MIN_TX_RESPONSE),
        "flux_nmse": float(served["nmse"]), "flux_ssim": float(served["ssim"]),
        "flux_tx_response": float(served["tx_response"]),
        "flux_speedup_b1": float(served["speedup_b1"]), "flux_speedup_batch": float(served["speedup_batch"]),
        "flux_speedup_t100_b1": float(served["speedup_t100_b1"]), "flux_reuse_ratio": float(served["reuse_ratio"]),
        "flux_nmse_loss": float(served["nmse_loss"]), "flux_ssim_loss": float(served["ssim_loss"]),
        "full_nmse": float(full["nmse"]), "full_ssim": float(full["ssim"]),
        "best_ldm_nmse": float(generative["nmse"]), "baseline_nmse": float(by_name.loc["baseline", "nmse"]),
    }
    out["flux_over_baseline_nmse"] = out["flux_nmse"] / out["baseline_nmse"]
    t100 = table[table["family"] == "reference"]
    if len(t100):
        out["t100_nmse"] = float(t100.iloc[0]["nmse"])
    out["flux_nmse_loss_ci95"] = float(served["nmse_loss_ci95"])
    out["flux_ssim_loss_ci95"] = float(served["ssim_loss_ci95"])
    if len(as_good):  # absent when no few-step sampler is as accurate as the served Flux
        out["flux_vs_ddim_speedup_b1"] = float(as_good.iloc[0]["ms_per_map_b1"] / served["ms_per_map_b1"])
    same_calls = few_step[few_step["unet_calls_per_map"] == served["unet_calls_per_map"]].sort_values("nmse")
    if len(same_calls):  # the best few-step sampler paying the Flux tail's network calls per query
        out["ddim_same_calls_nmse"] = float(same_calls.iloc[0]["nmse"])
        out["flux_vs_ddim_same_calls_nmse_change"] = float(served["nmse"] / same_calls.iloc[0]["nmse"] - 1.0)
    tuned = table[(table["family"] == "few_step_tuned") & (table["unet_calls_per_map"] == served["unet_calls_per_map"])]
    out.update({f"{name}_nmse": float(value) for name, value in zip(tuned["method"], tuned["nmse"])})
    if len(tuned):  # the control: the same calls and the tail's extra training, but no cached midpoint
        best = tuned.sort_values("nmse").iloc[0]
        out["tuned_same_calls_nmse"] = float(best["nmse"])
        out["flux_vs_tuned_same_calls_nmse_change"] = float(served["nmse"] / best["nmse"] - 1.0)
    for sampler, label in others:
        second = {f"{sampler}_1_nmse": f"{sampler}_1", f"{sampler}_5_nmse": f"{sampler}_5",
                  f"flux_{label}_nmse": f"flux_{label}_t{flux.t_mid}_tail{flux.tail_steps}"}
        out.update({key: float(by_name.loc[name, "nmse"]) for key, name in second.items() if name in by_name.index})
    return out


def meets_claim(head: dict[str, float]) -> float:
    """The paper's claim as the project bounds it: >= 50x the full trajectory for <= 0.15% SSIM
    and <= 2% NMSE loss, counted only where Flux counts (`flux_counts`: the reference follows the
    Tx, and the cars when there are traffic pairs). 1.0 or 0.0; read once `flux_counts` is final."""
    return float(head["flux_counts"] == 1.0 and head["flux_speedup_b1"] >= 50.0
                 and head["flux_ssim_loss"] <= 0.0015 and head["flux_nmse_loss"] <= 0.02)


def traffic_headline(table: pd.DataFrame, flux: FluxConfig) -> dict[str, float]:
    """The traffic scenario's figures: the served Flux (static midpoint, cars in the tail) against
    the best full-condition few-step sampler paying at least 5x its network calls, and the
    car-response of the served Flux, the T = 100 reference and the baseline."""
    by_name = table.set_index("method")
    served = by_name.loc[_served_name(table, flux)]
    reference = table[table["family"] == "reference"].iloc[0]
    out = {"traffic_flux_nmse": float(served["nmse"]), "traffic_flux_ssim": float(served["ssim"]),
           "traffic_flux_car_response": float(served["car_response"]),
           "traffic_flux_tx_response": float(served["tx_response"]),
           "traffic_t100_nmse": float(reference["nmse"]), "traffic_t100_car_response": float(reference["car_response"]),
           "traffic_baseline_nmse": float(by_name.loc["baseline", "nmse"]),
           "traffic_baseline_car_response": float(by_name.loc["baseline", "car_response"]),
           "traffic_flux_speedup_t100_b1": float(served["speedup_t100_b1"])}
    few_step = table[table["family"].isin(FEW_STEP_FAMILIES)
                     & (table["unet_calls_per_map"] >= 5 * served["unet_calls_per_map"])]
    if len(few_step):
        best = few_step.sort_values("nmse").iloc[0]
        out |= {"traffic_fewstep_nmse": float(best["nmse"]), "traffic_fewstep_calls": float(best["unet_calls_per_map"]),
                "traffic_flux_vs_fewstep_nmse_change": float(served["nmse"] / best["nmse"] - 1.0)}
    return out


def scenario_table(main: pd.DataFrame, traffic: pd.DataFrame | None, counts: bool) -> pd.DataFrame:
    """One table over the scenarios: `tx_moved` (the main run but its nearest-layout rows),
    `traffic` (its own run), `new_layout` (the main run's nearest-layout rows beside the served
    own-midpoint row). `counts` marks the Flux rows: True only where the reference trajectory
    responds to the Tx (and to the cars, with traffic pairs)."""
    nearest = main["family"].str.startswith("flux_nearest")
    served = main[main["family"].str.startswith("flux_tuned") | (main["family"] == "flux")]
    parts = [main[~nearest].assign(scenario="tx_moved")]
    if traffic is not None:
        parts.append(traffic.assign(scenario="traffic"))
    parts.append(pd.concat([served[served["t_mid"].isin(main.loc[nearest, "t_mid"])], main[nearest]])
                 .assign(scenario="new_layout"))
    table = pd.concat(parts, ignore_index=True)
    flux_rows = table["family"].str.startswith("flux")
    table["counts"] = np.where(flux_rows, counts, np.nan)
    first = ["scenario", "method", "family", "t_mid", "reuse_ratio", "reuse_calls", "tail_steps", "unet_calls_per_map"]
    return table[first + [c for c in table.columns if c not in first]]


@dataclass(frozen=True)
class EvaluateResult:
    """The `tx_moved` table (one row per method), the table over all scenarios, the new-layout
    distance bands, the consistency rows, the headline figures, the figures, and the per-map
    NMSE histogram rows of the compared methods (`distribution.histogram_rows`)."""

    table: pd.DataFrame
    scenarios: pd.DataFrame
    new_layout: pd.DataFrame
    consistency: pd.DataFrame
    headline: dict[str, float]
    figures: dict[str, object]
    histogram: pd.DataFrame


def evaluate(kit: Toolkit, cfg: EvaluateConfig, baseline, *, dataset_dir: Path, others: Sequence[Toolkit] = (),
             traffic: MapSet | None = None, edited: MapSet | None = None, progress: bool = True) -> EvaluateResult:
    """Run everything in one process: the `tx_moved` methods on `kit.maps` (accuracy over seeds,
    batch-1 timings), the `traffic` methods on the `traffic` pairs when given
    (`scenarios.select_traffic` of the same layouts), the `new_layout` analysis (on the test
    layouts and, when given, the `edited` layouts of `edited_layouts.edited_maps`), simulator
    timing, consistency over t, figures. `others` are the other objectives' models on the same
    maps (see `build_methods`)."""
    import dataclasses

    from radiodiff.progress import Progress

    from radiodiff.evaluation.figures import (
        consistency_figure, new_layout_figure, nmse_histogram_figure, no_data_figure, tradeoff_figure, traffic_figure,
    )
    from radiodiff.stages.figures import comparison_figure, spread_indices

    if cfg.reference_steps > kit.model.process.num_train_steps:
        from radiodiff.errors import UserError

        raise UserError(f"evaluate.reference_steps ({cfg.reference_steps}) exceeds the denoiser's "
                        f"{kit.model.process.num_train_steps} diffusion steps: lower it or retrain")
    methods = build_methods(kit, cfg, baseline, others)
    traffic_kit = dataclasses.replace(kit, maps=traffic) if traffic is not None else None
    traffic_list = traffic_methods(traffic_kit, cfg.reference_steps, cfg.ddim_steps, kit.flux.tail_steps,
                                    baseline) if traffic_kit is not None else []
    # A traffic query costs what a moved-Tx one does: its rows reuse the main run's batch-1 timings.
    missing = {m.name for m in traffic_list} - {m.name for m in methods}
    assert not missing, f"traffic methods absent from the main run: {sorted(missing)}"
    seeds = kit.flux.seeds
    edited_count = len(EDITED_FAMILIES) if edited is not None else 0
    bar = Progress((len(methods) + len(traffic_list) + edited_count) * len(seeds), "evaluate", unit="method",
                   enabled=progress)
    step = lambda name, seed: bar.update(last=name, seed=seed)  # noqa: E731
    accuracy = run_accuracy(methods, kit.maps, seeds, step)
    edited_kit = dataclasses.replace(kit, maps=edited) if edited is not None else None
    edited_run, edited_names = None, ()
    if edited_kit is not None:
        edited_list = edited_methods(edited_kit)
        edited_names = tuple(m.name for m in edited_list)
        edited_run = run_accuracy(edited_list, edited, seeds, step, score=nmse_score, metrics=("nmse",))
    traffic_run = run_accuracy(traffic_list, traffic, seeds, step, score=traffic_scores,
                               metrics=METRICS + ("car_response",)) if traffic_list else None
    bar.close()
    batch1 = batch1_timing(methods, cfg, seeds[0])
    shape = {"num_train_steps": kit.model.process.num_train_steps, "prefix_calls": kit.flux.prefix_steps}
    table = summary_table(methods, accuracy, batch1, energy=map_energy(kit.maps.gain), **shape)
    full = reference_name((m.name, m.family, m.unet_calls) for m in methods)
    traffic_table = summary_table(traffic_list, traffic_run, batch1, metrics=METRICS + ("car_response",),
                                  speed_reference=full, energy=map_energy(traffic.gain), **shape) if traffic_run else None
    consistency = consistency_rows(kit, cfg, seeds[0])  # latent similarity along the served model's sampler
    second = [(other.model.process.name, other.label) for other in others]
    head = headline(table, kit.flux, second) | simulator_timing(dataset_dir, kit.maps, cfg.timing_repeats)
    if traffic_table is not None:
        head |= traffic_headline(traffic_table, kit.flux)
        head["flux_counts"] = float(head["flux_counts"] == 1.0 and head["traffic_t100_car_response"] >= MIN_CAR_RESPONSE)
        head["traffic_vae_car_response"] = autoencoder_car_response(kit.model, traffic)
    head["flux_meets_claim"] = meets_claim(head)
    head["device"] = device_name(kit.model.device)
    served = _served_name(table, kit.flux)
    head["speedup_simulator_vs_flux_b1"] = head["simulator_ms_per_map_b1"] / float(
        table.set_index("method").loc[served, "ms_per_map_b1"])
    bands, figures = pd.DataFrame(), {}
    near = next((m.name for m in methods if m.family == "flux_nearest" and m.t_mid == kit.flux.t_mid), None)
    anywhere = next((m.name for m in methods if m.family == "flux_nearest_any"), None)
    if near and anywhere:
        distances = nearest_distances(kit, kit.flux.t_mid, seeds[0])
        own, forced, policy = (accuracy.per_map_nmse[name].mean(axis=0) for name in (served, anywhere, near))
        cold_paths = accuracy.bank_counts[near]["miss"] / len(seeds)
        is_edited = np.zeros(len(distances), bool)
        if edited_run is not None:
            head["new_layout_edited_maps"] = float(len(edited.maps))
            distances = np.concatenate([distances, nearest_distances(edited_kit, kit.flux.t_mid, seeds[0])])
            own, forced, policy = (np.concatenate([values, edited_run.per_map_nmse[name].mean(axis=0)])
                                   for values, name in zip((own, forced, policy), edited_names))
            cold_paths += edited_run.bank_counts[edited_names[2]]["miss"] / len(seeds)
            is_edited = np.concatenate([is_edited, np.ones(len(edited.maps), bool)])
        summary, bands = new_layout_summary(distances, own, forced, policy, kit.flux.nearest_max_distance,
                                            edited=is_edited)
        head |= summary
        head["new_layout_cold_paths"] = float(cold_paths)
        figures["evaluate_new_layout.png"] = new_layout_figure(distances, own, forced, kit.flux.nearest_max_distance,
                                                               edited=is_edited)
    shown = spread_indices(len(kit.maps.maps), 4)
    columns = {"DDPM full": "ddpm_full", "DDIM-5": "ddim_5", "decoupled-5": "decoupled_5", "flow-5": "flow_5",
               "Flux": served, "baseline": "baseline"}
    samples = comparison_figure(kit.maps.gain[shown], {label: accuracy.first_predictions[name][shown]
                                                       for label, name in columns.items()
                                                       if name in accuracy.first_predictions},
                                cond=kit.maps.cond[shown], title="evaluate: test maps, seed 0")
    figures |= {"evaluate_tradeoff.png": tradeoff_figure(table), "evaluate_samples.png": samples}
    compared = [name for name in dict.fromkeys([*columns.values(), reference_name(
        (m.name, m.family, m.unet_calls) for m in methods), "flow_1", "decoupled_1", "ddim_1",
        *(m.name for m in methods if m.family == "few_step_tuned")])
        if name in accuracy.per_map_nmse]
    histogram = histogram_rows(accuracy.per_map_nmse, compared)
    figures["evaluate_nmse_histogram.png"] = nmse_histogram_figure(histogram)
    if traffic_run is not None:
        pairs = len(traffic.maps) // 2
        shown = spread_indices(pairs, 4)
        cars = [pairs + i for i in shown]
        t100 = next(m.name for m in traffic_list if m.family == "reference")
        labels = {f"T={cfg.reference_steps}": t100, "DDIM-5": "ddim_5", "Flux": served, "baseline": "baseline"}
        first = {label: traffic_run.first_predictions[name][:, 0].numpy() for label, name in labels.items()
                 if name in traffic_run.first_predictions}
        gain = traffic.gain[:, 0].numpy()
        figures["evaluate_traffic.png"] = traffic_figure(
            gain[shown], gain[cars], traffic.cond[cars, 2].numpy() > 0,
            {label: pred[shown] for label, pred in first.items()}, {label: pred[cars] for label, pred in first.items()})
    else:
        figures["evaluate_traffic.png"] = no_data_figure(
            "evaluate: traffic", "no traffic samples in the test split (prepare.dynamic is 0)")
    process = kit.model.process
    figures["evaluate_consistency.png"] = consistency_figure(consistency, (process.start_time, process.end_time))
    scenarios = scenario_table(table, traffic_table, bool(head["flux_counts"]))
    return EvaluateResult(table, scenarios, bands, consistency, head, figures, pd.DataFrame(histogram))


def _served_name(table: pd.DataFrame, flux: FluxConfig) -> str:
    family = "flux_tuned" if flux.use_tuned_tail and (table["family"] == "flux_tuned").any() else "flux"
    return f"{family}_t{flux.t_mid}_tail{flux.tail_steps}"
