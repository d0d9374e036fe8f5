"""docs/RESULTS.md, written from a run's own outputs: every figure in it comes from a file.

`render_report` reads the stages' metrics (`metrics/*.json`) and evaluate's tables
(`plots/evaluate_table.json`, `plots/evaluate_scenarios.json`) and writes Markdown: what ran
and how long each stage took, the headline, every method on the tx_moved maps, each scenario,
and links to the figures. Nothing in it is typed by hand, so it cannot drift from the run it
describes; the README links it instead of quoting numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# (metrics file stem, what it did, the keys shown as "name value" pairs, the key holding its time)
STAGES: tuple[tuple[str, str, tuple[tuple[str, str], ...], str], ...] = (
    ("prepare", "simulated dataset", (("maps", "maps"), ("samples_train", "train samples"),
                                      ("samples_with_cars", "with cars")), "wall_seconds"),
    ("train_vae", "KL-VAE, test reconstruction", (("test_nmse", "NMSE"), ("test_ssim", "SSIM"),
                                                  ("steps_per_s", "steps/s")), "train_seconds"),
    ("train_ldm", "served denoiser, DDIM samples of every test map",
     (("test_nmse", "NMSE"), ("test_tx_response", "Tx-response"), ("steps_per_s", "steps/s")), "train_seconds"),
    ("build_bank", "midpoint bank", (("entries", "entries"), ("bank_mb", "MB")), "build_seconds"),
    ("tune_tail", "Flux tail fine-tuning, validation", (("flux_nmse", "Flux NMSE"), ("steps_per_s", "steps/s")),
     "train_seconds"),
    ("train_baseline", "supervised RadioUNet-style peer, every test map",
     (("test_nmse", "NMSE"), ("test_tx_response", "Tx-response"), ("steps_per_s", "steps/s"),
      ("parity_steps", "planned steps"), ("parity_coda_steps", "then at the floor lr"),
      ("generative_train_seconds", "to match the generative chain's training s"),
      ("train_seconds_over_generative", "trained x that time")),
     "train_seconds"),
)
# Stages whose metrics file holds one group per objective.
GROUPED = (("train_ldm_alt", "other objectives, their samplers on every test map",
            (("test_nmse", "NMSE"), ("test_tx_response", "Tx-response")), "train_seconds"),
           ("tune_few_step", "one-step samplers given the tail's fine-tuning", (), "train_seconds"))
HEADLINE = (("flux_nmse", "served Flux NMSE"), ("flux_ssim", "served Flux SSIM"),
            ("flux_tx_response", "served Flux Tx-response"), ("flux_speedup_b1", "served Flux speedup vs the full "
                                                                                  "trajectory, batch 1"),
            ("full_nmse", "full trajectory NMSE"), ("baseline_nmse", "supervised baseline NMSE"),
            ("flux_over_baseline_nmse", "served Flux NMSE over the baseline's"),
            ("flux_vs_tuned_same_calls_nmse_change", "Flux vs the tuned one-step sampler at equal calls, NMSE change"),
            ("traffic_flux_nmse", "traffic: served Flux NMSE"),
            ("traffic_flux_car_response", "traffic: served Flux car-response"),
            ("traffic_t100_car_response", "traffic: T = 100 reference car-response"),
            ("traffic_vae_car_response", "traffic: car-response of the VAE's reconstruction (any latent method's ceiling)"),
            ("new_layout_maps_within_bound", "new_layout: maps within the lookup's distance bound"),
            ("new_layout_nearest_vs_own_within", "new_layout: nearest layout's midpoint vs own within the bound, "
                                                 "NMSE change"),
            ("new_layout_cold_paths", "new_layout: cold paths taken (per seed)"),
            ("flux_counts", "Flux counts (reference follows Tx >= 0.8 and cars >= 0.5)"),
            ("flux_meets_claim", "meets the paper's claim (>= 50x, <= 2% NMSE loss)"))
METHOD_COLUMNS = (("method", "method"), ("unet_calls_per_map", "calls"), ("nmse", "NMSE"), ("nmse_median", "median"),
                  ("nmse_p90", "p90"), ("nmse_dark", "dark 10%"), ("ssim", "SSIM"), ("tx_response", "Tx-resp."),
                  ("ms_per_map_b1", "ms/map b1"), ("speedup_b1", "x full b1"))
SCENARIO_COLUMNS = (("scenario", "scenario"), ("method", "method"), ("reuse_ratio", "R"), ("unet_calls_per_map", "calls"),
                    ("nmse", "NMSE"), ("ssim", "SSIM"), ("tx_response", "Tx-resp."), ("car_response", "car-resp."),
                    ("ms_per_map_b1", "ms/map b1"), ("speedup_t100_b1", "x T=100"), ("counts", "counts"))
NEW_LAYOUT_COLUMNS = (("distance_from", "distance from"), ("distance_to", "to"), ("maps", "maps"),
                      ("edited_maps", "of them edited"), ("own_nmse", "own midpoint NMSE"),
                      ("nearest_nmse", "nearest layout's"), ("nearest_vs_own", "change"),
                      ("served_nmse", "served (cold path beyond the bound)"))
FIGURES = (("evaluate_samples.png", "test maps: truth beside each method"),
           ("evaluate_tradeoff.png", "NMSE against ms per map, every method"),
           ("evaluate_traffic.png", "traffic: the same Tx with and without cars"),
           ("evaluate_new_layout.png", "new layouts: reuse against layout distance"),
           ("evaluate_consistency.png", "latent similarity along the trajectory"),
           ("evaluate_nmse_histogram.png", "per-map NMSE histogram"),
           ("ldm_samples.png", "denoiser samples (train_ldm)"), ("vae_reconstructions.png", "VAE reconstructions"),
           ("baseline_predictions.png", "baseline predictions"), ("prepare_samples.png", "prepared samples"))


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if not math.isfinite(value):
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 10:
        return f"{int(value):,}"
    magnitude = abs(value)
    # "#": trailing zeros kept, so 1.004 reads 1.00, not 1
    return f"{value:.4f}" if magnitude < 1 else f"{value:#.3g}" if magnitude < 100 else f"{value:,.0f}"


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]],
           cell: Callable[[Mapping[str, Any], str], str] | None = None) -> list[str]:
    present = [(key, title) for key, title in columns if any(key in row for row in rows)]
    lines = ["| " + " | ".join(title for _, title in present) + " |", "|" + "---|" * len(present)]
    for row in rows:
        cells = [(cell(row, key) if cell else None) or _number(row.get(key)) for key, _ in present]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def stage_rows(metrics_dir: Path) -> list[dict[str, str]]:
    """One row per stage that wrote metrics: stage, result (name value pairs), seconds."""
    rows = []
    for stem, what, keys, seconds in STAGES:
        metrics = _read_json(metrics_dir / f"{stem}.json")
        if metrics:
            shown = ", ".join(f"{name} {_number(metrics[key])}" for key, name in keys if key in metrics)
            rows.append({"stage": stem, "result": f"{what}: {shown}", "seconds": _number(metrics.get(seconds))})
    for stem, what, keys, seconds in GROUPED:
        groups = _read_json(metrics_dir / f"{stem}.json") or {}
        for objective, metrics in groups.items():
            if not isinstance(metrics, Mapping):
                continue
            pairs = [(key, name) for key, name in keys if key in metrics] or \
                [(key, f"validation {key.removesuffix('_nmse')} NMSE") for key in metrics if key.endswith("_nmse")]
            shown = ", ".join(f"{name} {_number(metrics[key])}" for key, name in pairs)
            rows.append({"stage": f"{stem} ({objective})", "result": f"{what}: {shown}",
                         "seconds": _number(metrics.get(seconds))})
    evaluate = _read_json(metrics_dir / "evaluate.json")
    if evaluate:
        rows.append({"stage": "evaluate", "result": "every method on the same maps and seeds (below)",
                     "seconds": _number(evaluate.get("evaluate_seconds"))})
    return rows


def render_report(metrics_dir: Path, plots_dir: Path, *, run: Mapping[str, str], figures_link: str = "../plots"
                  ) -> str:
    """The Markdown report of the outputs in `metrics_dir` and `plots_dir`; `run` holds what
    identifies the run (commit, params, device, date), shown at the top."""
    head = _read_json(metrics_dir / "evaluate.json") or {}
    lines = ["# Results of the last pipeline run", "",
             "Written by the `report` stage of `dvc repro` from this run's `metrics/*.json` and `plots/`"
             " (do not edit: the next run rewrites it).", ""]
    lines += [f"- {key}: {value}" for key, value in run.items()] + [""]
    lines += ["## Stages", ""] + _table(stage_rows(metrics_dir), (("stage", "stage"), ("result", "result"),
                                                                  ("seconds", "seconds")),
                                        cell=lambda row, key: row.get(key))
    if head:
        lines += ["", "## Headline", "", "| figure | value |", "|---|---|"]
        lines += [f"| {name} | {_number(head[key])} |" for key, name in HEADLINE if key in head]
    table = _read_json(plots_dir / "evaluate_table.json")
    if table:
        lines += ["", "## Every method on the tx_moved maps", "",
                  "Mean over seeds (NMSE with its 95% interval), the median, 90th percentile and darkest-10% NMSE"
                  " over maps, and ms per map at batch 1 (medians of interleaved rounds on a shared machine:"
                  " a range, not a point).", ""]
        lines += _table(table, METHOD_COLUMNS, cell=_nmse_with_interval)
    scenarios = _read_json(plots_dir / "evaluate_scenarios.json")
    if scenarios:
        lines += ["", "## By scenario", "",
                  "R is the share of the sampler's steps served from the cached midpoint; a Flux row counts only"
                  " where the reference follows the Tx (>= 0.8) and the cars (>= 0.5).", ""]
        lines += _table(scenarios, SCENARIO_COLUMNS, cell=_nmse_with_interval)
    bands = _read_csv(plots_dir / "evaluate_new_layout.csv")
    if bands:
        lines += ["", "## new_layout: nearest-layout reuse against distance", "",
                  "Per band of distance to the nearest banked layout (the layout embedding's RMS occupancy"
                  " difference), at the served t_mid: NMSE from the layout's own static midpoint, from the"
                  " nearest banked layout's, and what is served (the nearest within"
                  f" `flux.nearest_max_distance` = {_number(head.get('new_layout_bound'))}, else the cold path)."
                  " Edited maps are banked layouts with a share of their buildings removed; the truth is the"
                  " simulator's.", ""]
        lines += _table(bands, NEW_LAYOUT_COLUMNS, cell=lambda row, key: None)
    shown = [(name, what) for name, what in FIGURES if (plots_dir / name).is_file()]
    if shown:
        lines += ["", "## Figures", ""] + [f"- [{what}]({figures_link}/{name})" for name, what in shown]
    return "\n".join(lines) + "\n"


def _read_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV file, whole numbers as int and other numbers as float; [] when the file
    is absent."""
    if not path.is_file():
        return []
    import csv

    with open(path, newline="") as handle:
        return [{key: _maybe_number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _maybe_number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _nmse_with_interval(row: Mapping[str, Any], key: str) -> str | None:
    if key == "nmse" and isinstance(row.get("nmse_ci95"), int | float) and math.isfinite(row["nmse_ci95"]):
        return f"{_number(row['nmse'])} ± {_number(row['nmse_ci95'])}"
    if key == "counts" and isinstance(row.get(key), int | float) and math.isfinite(row[key]):
        return "yes" if row[key] else "no"
    return None
