"""DVC stage `evaluate`: every method on the same test maps in one run (accuracy over seeds,
speed side by side), per scenario (tx_moved, traffic, new_layout), the Flux headline against
the paper's claim, plots and figures."""

from __future__ import annotations

import time
from pathlib import Path

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import rank_flow, save_figure, stage_main, write_metrics
from prefect import flow

from radiodiff import tracking
from radiodiff.artifacts.layout import BANK_DIR, DATASET_DIR, MODELS, ModelFiles, PLOTS_DIR
from radiodiff.config import EvaluateConfig, FluxConfig
from radiodiff.io import atomic_write_text

TABLE_COLUMNS = ("nmse", "nmse_ci95", "nmse_median", "nmse_pooled", "nmse_p90", "nmse_dark", "ssim", "ssim_ci95",
                 "tx_response", "nmse_loss", "ssim_loss", "ms_per_map_b1", "ms_per_map_batch", "speedup_b1",
                 "speedup_batch")
# Headline figures tagged on the registered model version (the full set is in the run's metrics).
REGISTRY_TAGS = ("flux_nmse", "flux_ssim", "flux_speedup_b1", "flux_nmse_loss", "flux_ssim_loss", "full_nmse",
                 "baseline_nmse", "flux_meets_claim")


def _toolkits(flux: FluxConfig, cfg: EvaluateConfig, alternatives: tuple[str, ...], dataset_dir: Path,
              models_dir: Path, bank_dir: Path, device, precision):
    """The served denoiser's toolkit (with its tuned tail), each of the `alternatives`
    objectives' on the same maps (labelling its Flux rows with its objective: flux_kc_...,
    flux_flow_...), each with its copy tuned on its one-step sampler, the traffic pairs of the
    same layouts (None without traffic samples) and the edited banked layouts of `new_layout`
    (None with `edited_scenes` 0), on `device` at `precision`."""
    import dataclasses

    from radiodiff.artifacts.denoiser import load_few_step, load_ldm, load_tail
    from radiodiff.data.dataset import RadioMapDataset
    from radiodiff.evaluation.methods import Toolkit
    from radiodiff.stages.bank import load_scenes
    from radiodiff.evaluation.scenarios import chosen_layouts, select_traffic
    from radiodiff.stages.evaluate import select_maps

    files = ModelFiles(models_dir)
    model, ldm_cfg, condition = load_ldm(files.ldm, files.vae, device, precision)
    test = RadioMapDataset(dataset_dir, "test", condition.encodings)
    maps = select_maps(test, cfg)
    traffic = select_traffic(test, chosen_layouts(test.index, cfg.scenes), cfg.traffic_per_scene)
    tail = load_tail(files.flux_tail, files.ldm, model)
    exclude = frozenset(load_scenes(dataset_dir, ["test"]).ids.tolist())
    kit = Toolkit(model, maps, flux, files.ldm, bank_dir, tail, exclude, condition.encodings,
                  few_step=load_few_step(_few_step_file(files, ldm_cfg.diffusion.prediction.value), files.ldm, model))
    others = []
    for name in alternatives:
        path = files.alternative(name)
        alt_model, alt_cfg, _ = load_ldm(path, files.vae, device, precision)
        if alt_cfg.diffusion.prediction.value != name:
            from radiodiff.errors import UserError

            raise UserError(f"{path} was trained on {alt_cfg.diffusion.prediction.value}, not {name}: "
                            "run `dvc repro train_ldm_alt`")
        few_step = load_few_step(_few_step_file(files, name), path, alt_model)
        others.append(dataclasses.replace(kit, model=alt_model, ldm_path=path, tail=None, banks={}, label=name,
                                          few_step=few_step))
    edited = None
    if cfg.edited_scenes:
        from radiodiff.evaluation.edited_layouts import edited_maps, edited_originals

        train = RadioMapDataset(dataset_dir, "train", condition.encodings)
        edited = edited_maps(edited_originals(train.index, cfg.edited_scenes), cfg.edit_shares,
                             int(maps.cond.shape[-1]), condition.encodings)
    return kit, tuple(others), traffic, edited


def _few_step_file(files: ModelFiles, objective: str) -> Path:
    """The file of `objective` (v, kc, flow) in `models/few_step`, or a UserError naming the stage."""
    path = files.few_step(objective)
    if not path.is_file():
        from radiodiff.errors import UserError

        raise UserError(f"model file not found: {path} (run `dvc repro tune_few_step`)")
    return path


PLOT_FILES = ("evaluate_tradeoff.csv", "evaluate_consistency.csv", "evaluate_table.json", "evaluate_scenarios.json",
              "evaluate_new_layout.csv", "evaluate_nmse_histogram.csv")


def _write_plots(result) -> None:
    """DVC plot data: the trade-off over methods, similarity over t, the tables (tx_moved, every
    scenario), the new-layout distance bands and the per-map NMSE histogram."""
    tradeoff = result.table[["method", "family", "t_mid", "tail_steps", "nmse", "ssim", "ms_per_map_b1"]]
    atomic_write_text(PLOTS_DIR / "evaluate_tradeoff.csv", tradeoff.to_csv(index=False))
    atomic_write_text(PLOTS_DIR / "evaluate_consistency.csv", result.consistency.to_csv(index=False))
    atomic_write_text(PLOTS_DIR / "evaluate_table.json", result.table.to_json(orient="records", indent=1))
    atomic_write_text(PLOTS_DIR / "evaluate_scenarios.json", result.scenarios.to_json(orient="records", indent=1))
    atomic_write_text(PLOTS_DIR / "evaluate_new_layout.csv", result.new_layout.to_csv(index=False))
    atomic_write_text(PLOTS_DIR / "evaluate_nmse_histogram.csv", result.histogram.to_csv(index=False))


@flow(name="evaluate", validate_parameters=False)
def evaluate_flow(flux: FluxConfig, cfg: EvaluateConfig, alternatives: tuple[str, ...] = (),
                  dataset_dir: str = str(DATASET_DIR), models_dir: str = str(MODELS.folder),
                  bank_dir: str = str(BANK_DIR)) -> dict:
    """Evaluate, then write metrics/evaluate.json, the plot data and figures; log all to MLflow."""
    from radiodiff import devices
    from radiodiff.artifacts.baseline import load_baseline
    from radiodiff.stages.baseline import predict_baseline
    from radiodiff.stages.evaluate import evaluate

    device = devices.resolve_device(cfg.device)
    precision = devices.resolve_precision(cfg.precision, device)
    kit, others, traffic, edited = _toolkits(flux, cfg, tuple(alternatives), Path(dataset_dir), Path(models_dir),
                                     Path(bank_dir), device, precision)
    baseline, _ = load_baseline(ModelFiles(Path(models_dir)).baseline, device)

    def run_baseline(cond):
        with devices.autocast(device, precision):
            return predict_baseline(baseline, cond)

    with tracking.stage_run("evaluate", {"flux": flux, "evaluate": cfg}) as run:
        started = time.perf_counter()
        result = evaluate(kit, cfg, run_baseline, dataset_dir=Path(dataset_dir), others=others, traffic=traffic,
                          edited=edited)
        result.headline["evaluate_seconds"] = time.perf_counter() - started
        per_method = {row["method"]: {k: row[k] for k in TABLE_COLUMNS}
                      for row in result.table.to_dict(orient="records")}
        run.log(result.headline)
        run.log({f"{name}/{key}": value for name, row in per_method.items() for key, value in row.items()})
        for name, figure in result.figures.items():
            run.log_figure(figure, name)
            save_figure(figure, name)
        _write_plots(result)
        for name in PLOT_FILES:
            run.log_artifact(PLOTS_DIR / name, folder="evaluate")
        # The headline is the DVC metric (compact in `dvc metrics show` / `dvc exp show`); the
        # per-method table is plot data (plots/evaluate_table.json) and printed below.
        write_metrics("evaluate", result.headline)
        _register(flux, Path(models_dir), Path(bank_dir), int(kit.maps.cond.shape[-1]), result.headline)
    print(_table_text(result.table))
    print(_scenario_text(result.scenarios))
    return result.headline


def _register(flux: FluxConfig, models_dir: Path, bank_dir: Path, resolution: int, headline: dict) -> None:
    """Register what `radiodiff predict` serves (denoiser, VAE, tuned tail, bank) in the MLflow
    Model Registry, the version tagged with the headline figures."""
    from radiodiff.tracking.registry import CHAMPION, MODEL_NAME, promote_champion, register_flux_model

    tags = {key: headline[key] for key in REGISTRY_TAGS if key in headline}
    files = ModelFiles(models_dir)
    version = register_flux_model(ldm_path=files.ldm, vae_path=files.vae, flux=flux, resolution=resolution,
                                  tail_path=files.flux_tail, bank_dir=bank_dir, tags=tags)
    promoted, reason = promote_champion(version, nmse=float(headline["flux_nmse"]),
                                        gate=headline.get("flux_counts") == 1.0, why_not=_gate_failure(headline))
    print(f"registered MLflow model {MODEL_NAME} version {version} (models:/{MODEL_NAME}/{version}); {reason}"
          + (f"; serve it: radiodiff serve --model models:/{MODEL_NAME}@{CHAMPION}" if promoted else ""))


def _gate_failure(headline: dict) -> str:
    """Why Flux does not count, in words (empty when it does)."""
    if headline.get("flux_counts") == 1.0:
        return ""
    reasons = []
    if headline.get("full_tx_response", 1.0) < 0.8:
        reasons.append(f"the full trajectory's Tx-response {headline['full_tx_response']:.2f} < 0.8")
    if headline.get("traffic_t100_car_response", 1.0) < 0.5:
        reasons.append(f"the T = 100 reference's car-response {headline['traffic_t100_car_response']:.2f} < 0.5")
    return "Flux does not count (" + ("; ".join(reasons) or "flux_counts is 0") + ")"


def _table_text(table) -> str:
    """The evaluate table as text: what a person reads first after `dvc repro`."""
    shown = table.assign(nmse=[f"{m:.4f} +- {c:.4f}" for m, c in zip(table["nmse"], table["nmse_ci95"])])
    columns = ["method", "nmse", "nmse_median", "nmse_p90", "nmse_dark", "ssim", "tx_response", "nmse_loss",
               "ms_per_map_b1", "speedup_b1", "speedup_batch"]
    return "evaluate (mean +- 95% CI over seeds; losses vs ddpm_full, negative = better):\n" + \
        shown[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}")


SCENARIO_COLUMNS = ("scenario", "method", "t_mid", "reuse_ratio", "unet_calls_per_map", "nmse", "rmse", "ssim",
                    "psnr", "tx_response", "car_response", "ms_per_map_b1", "speedup_t100_b1", "speedup_b1",
                    "speedup_vs_few_step_b1", "counts")


def _scenario_text(scenarios) -> str:
    """The per-scenario table as text: the served and compared rows of each scenario."""
    shown = scenarios[[c for c in SCENARIO_COLUMNS if c in scenarios.columns]]
    return ("evaluate by scenario (mean over seeds; speedups at batch 1 vs the T = 100 reference and the full "
            "trajectory; a Flux row counts only where the reference follows the Tx (>= 0.8) and the cars (>= 0.5)):\n"
            + shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: rank_flow(evaluate_flow)(
        params.flux, params.evaluate, tuple(p.value for p in params.ldm_alt.predictions)))


if __name__ == "__main__":
    raise SystemExit(main())
