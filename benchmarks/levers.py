"""Training levers of the denoiser, each measured against the same control on the same maps.

    .venv/bin/python benchmarks/levers.py [--project .] [--params params.yaml] [--levers control energy ...]
                                          [--baseline] [--out levers.json]

Run after a pipeline run (`make demo`): it reads that run's prepared data and trained VAE, then
trains the denoiser of params' `ldm` section once per lever, each a change of that section or of
the condition, from the same seed and for the same steps, and samples every test map with DDIM
at 1 and 5 steps (the one-call sampler is the family the served Flux tail belongs to). One row
per lever: NMSE mean, median, p90 and over the darkest 10% of maps, Tx-response, training
seconds and steps/s, and the change of the mean NMSE against the control; then, on the test
split's traffic pairs (same Tx with and without the layout's cars), the one-call sampler's
car-response and NMSE with the cars. The baseline row is the run's own
`metrics/train_baseline.json`, for scale; `--baseline` also retrains the supervised baseline
under each lever, for the steps that run's baseline took, so a lever on the data (augmentation)
shows what it does to both models. Levers (`LEVERS`):

- control: params as they are;
- energy: `loss_weighting: energy`, each map's loss weighted by 1 / its energy, as in the mean NMSE;
- traffic: `loss_weighting: traffic`, a map with cars weighted 3x one without;
- min_snr: `loss_weighting: min_snr`, each draw's x0 error weighted min(SNR(t), 5) (v: not SNR + 1);
- ema_fast / ema_slow: EMA decay 0.99 / 0.999 (params: 0.995);
- lr_high / lr_x4 / lr_x8: 2, 4 and 8 times the peak learning rate;
- wide: 1.5x the channels (48 vs 32) at the same steps, so it pays in time;
- cond_wide: twice the condition encoder's channels, the path the car shadow takes into the UNet;
- kc / flow: the other objectives (their own samplers stand in for DDIM), to try a lever on them;
- no_car_shadow: the condition without its car-shadow channel (the Tx-to-pixel car crossing);
- no_augment: the denoiser and the baseline on the train maps as prepared, not their 8 turns;
- half_batch: half the batch (16) for twice the steps: the same maps seen with twice the updates;
  half_batch_time: for 1.5x the steps, about the control's training time on the demo's CPU;
- steps_x2: twice the steps at the same batch (the learning-rate schedule stretched with them):
  what twice the training time buys the denoiser.

A lever spelled `a+b` applies both (`lr_high+energy`). Training seconds are wall clock on a shared machine: compare rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from radiodiff.artifacts.layout import DATASET_DIR, METRICS_DIR, MODELS
from radiodiff.config import LDMConfig, Params, load_params
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.evaluation.distribution import map_energy, nmse_distribution
from radiodiff.evaluation.scenarios import select_traffic, traffic_scores
from radiodiff.generation import generate
from radiodiff.metrics import nmse
from radiodiff.options import Augmentation, LossWeighting, Prediction, TxEncoding
from radiodiff.stages.baseline import train_baseline
from radiodiff.stages.ldm import sample_metrics, train_ldm
from radiodiff.training.rng import seeded_generator

from _after_run import after_run_parser  # this folder's helper: benchmarks run by path

Lever = Callable[[Params], Params]


def _on_ldm(change: Callable[[LDMConfig], LDMConfig]) -> Lever:
    return lambda params: replace(params, ldm=change(params.ldm))


def _ema(decay: float) -> Lever:
    return _on_ldm(lambda cfg: replace(cfg, train=replace(cfg.train, optim=replace(cfg.train.optim, ema_decay=decay))))


def _lr(factor: float) -> Lever:
    return _on_ldm(lambda cfg: replace(cfg, train=replace(cfg.train, optim=replace(cfg.train.optim,
                                                                                   lr=factor * cfg.train.optim.lr))))


def _half_batch(steps_factor: float) -> Lever:
    """Half the batch for `steps_factor` times the steps (the warm-up and EMA start stay in steps:
    the other objectives derive their runs from these)."""
    def change(cfg: LDMConfig) -> LDMConfig:
        train = cfg.train
        steps = round(steps_factor * train.total_steps)
        return replace(cfg, data=replace(cfg.data, batch_size=cfg.data.batch_size // 2),
                       train=replace(train, total_steps=steps, val_every=steps // 2, checkpoint_every=steps // 2))
    return _on_ldm(change)


def _steps(factor: float) -> Lever:
    """`factor` times the steps at the same batch, warm-up and EMA start: how the denoiser's
    accuracy grows with training time, to set beside the baseline's."""
    def change(cfg: LDMConfig) -> LDMConfig:
        steps = round(factor * cfg.train.total_steps)
        return replace(cfg, train=replace(cfg.train, total_steps=steps, val_every=steps // 2,
                                          checkpoint_every=steps // 2))
    return _on_ldm(change)


def _no_augment(params: Params) -> Params:
    def plain(data):
        return replace(data, augment=Augmentation.NONE)
    return replace(params, ldm=replace(params.ldm, data=plain(params.ldm.data)),
                   baseline=replace(params.baseline, data=plain(params.baseline.data)))


def _without_encoding(encoding: TxEncoding) -> Lever:
    def apply(params: Params) -> Params:
        kept = tuple(e for e in params.condition.encodings if e is not encoding)
        return replace(params, condition=replace(params.condition, encodings=kept))
    return apply


LEVERS: dict[str, Lever] = {
    "control": lambda params: params,
    "energy": _on_ldm(lambda cfg: replace(cfg, loss_weighting=LossWeighting.ENERGY)),
    "traffic": _on_ldm(lambda cfg: replace(cfg, loss_weighting=LossWeighting.TRAFFIC)),
    "min_snr": _on_ldm(lambda cfg: replace(cfg, loss_weighting=LossWeighting.MIN_SNR)),
    "ema_fast": _ema(0.99),
    "ema_slow": _ema(0.999),
    "lr_high": _lr(2.0),
    "lr_x4": _lr(4.0),
    "lr_x8": _lr(8.0),
    "wide": _on_ldm(lambda cfg: replace(cfg, unet=replace(cfg.unet, base_channels=cfg.unet.base_channels * 3 // 2))),
    "cond_wide": _on_ldm(lambda cfg: replace(cfg, unet=replace(cfg.unet,
                                                                cond_base_channels=2 * cfg.unet.cond_base_channels))),
    # the other objectives, to check a lever on them too (`kc+lr_x4`)
    "kc": _on_ldm(lambda cfg: replace(cfg, diffusion=replace(cfg.diffusion, prediction=Prediction.KC))),
    "flow": _on_ldm(lambda cfg: replace(cfg, diffusion=replace(cfg.diffusion, prediction=Prediction.FLOW))),
    "no_car_shadow": _without_encoding(TxEncoding.CAR_SHADOW),
    "no_augment": _no_augment,
    "half_batch": _half_batch(2.0),
    "half_batch_time": _half_batch(1.5),
    "steps_x2": _steps(2.0),
}


def compose(name: str) -> Lever:
    """The lever `name`, or the levers of `a+b` applied in turn."""
    parts = [LEVERS[part] for part in name.split("+")]

    def apply(params: Params) -> Params:
        for part in parts:
            params = part(params)
        return params

    return apply


def _lever_name(name: str) -> str:
    unknown = [part for part in name.split("+") if part not in LEVERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown lever {', '.join(unknown)}; known: {', '.join(LEVERS)}")
    return name


def spread(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean, median, p90 and darkest-tenth NMSE over maps `[N, 1, H, W]`."""
    per_map = nmse(pred, target).numpy()
    shape = nmse_distribution(per_map, map_energy(target))
    return {"nmse": float(per_map.mean()), "median": shape["nmse_median"], "p90": shape["nmse_p90"],
            "dark": shape["nmse_dark"]}


def measure(name: str, params: Params, project: Path, work: Path) -> dict[str, float | str]:
    result = train_ldm(params.ldm, params.condition, dataset_dir=project / DATASET_DIR,
                       vae_path=project / MODELS.vae, work_dir=work, log=lambda metrics, step: None, progress=True)
    test = RadioMapDataset(project / DATASET_DIR, "test", params.condition.encodings)
    row: dict[str, float | str] = {"lever": name, "train_s": result.metrics["train_seconds"],
                                   "steps_per_s": result.metrics["steps_per_s"]}
    for steps in (1, 5):
        metrics, pred, target = sample_metrics(result.model, test, steps)
        row.update({f"ddim{steps}_{key}": value for key, value in spread(pred, target).items()})
        row[f"ddim{steps}_tx_response"] = metrics["tx_response"]
    row.update(traffic_row(result.model, test))
    return row


def measure_baseline(params: Params, project: Path, work: Path, steps: int) -> dict[str, float]:
    """The supervised baseline of `params` trained for `steps` (no parity planning: every lever
    gets the same steps), scored on every test map."""
    train = replace(params.baseline.train, total_steps=steps, val_every=steps, checkpoint_every=steps)
    cfg = replace(params.baseline, compute_parity=False, train=train)
    result = train_baseline(cfg, params.condition, dataset_dir=project / DATASET_DIR, work_dir=work,
                            log=lambda metrics, step: None, progress=True)
    return {"baseline_nmse": result.metrics["test_nmse"], "baseline_train_s": result.metrics["train_seconds"]}


def traffic_row(model, test: RadioMapDataset) -> dict[str, float]:
    """One-call car-response and NMSE with the cars over every traffic pair of the test split
    (NaN for both where the data has none: `prepare.dynamic` 0)."""
    pairs = select_traffic(test, test.index["map_id"].unique().tolist(), per_scene=len(test))
    if pairs is None:
        return {"car_response": float("nan"), "traffic_nmse": float("nan")}
    with torch.no_grad():
        pred = generate(model, pairs.cond.to(model.device), steps=1, generator=seeded_generator(0)).cpu()
    scores = traffic_scores(pred, pairs)
    return {"car_response": scores["car_response"], "traffic_nmse": scores["nmse"]}


def print_table(rows: list[dict], baseline: dict | None) -> None:
    """One line per lever; the 1- and 5-call columns are each objective's own sampler (DDIM for v)."""
    control = next((row for row in rows if row["lever"] == "control"), None)
    width = max(10, *(len(row["lever"]) for row in rows))
    with_baseline = all("baseline_nmse" in row for row in rows)
    print(f"{'lever':<{width}} {'train s':>8} {'step/s':>7} | {'1-call NMSE':>11} {'median':>7} {'p90':>7} "
          f"{'dark':>7} {'Tx-resp':>7} {'vs ctrl':>8} | {'5-call NMSE':>11} {'vs ctrl':>8} | "
          f"{'car-resp':>8} {'cars NMSE':>9}" + (f" | {'baseline NMSE':>13} {'vs ctrl':>8}" if with_baseline else ""))

    def versus(row: dict, key: str) -> str:
        return "" if control is None else f"{row[key] / control[key] - 1:+.1%}"

    for row in rows:
        change = {steps: versus(row, f"ddim{steps}_nmse") for steps in (1, 5)}
        print(f"{row['lever']:<{width}} {row['train_s']:>8.0f} {row['steps_per_s']:>7.2f} | {row['ddim1_nmse']:>11.4f} "
              f"{row['ddim1_median']:>7.4f} {row['ddim1_p90']:>7.4f} {row['ddim1_dark']:>7.4f} "
              f"{row['ddim1_tx_response']:>7.3f} {change[1]:>8} | {row['ddim5_nmse']:>11.4f} {change[5]:>8} | "
              f"{row.get('car_response', float('nan')):>8.3f} {row.get('traffic_nmse', float('nan')):>9.4f}"
              + (f" | {row['baseline_nmse']:>13.4f} {versus(row, 'baseline_nmse'):>8}" if with_baseline else ""))
    if baseline:
        print(f"{'baseline':<{width}} {baseline['train_seconds']:>8.0f} {baseline['steps_per_s']:>7.2f} | "
              f"{baseline['test_nmse']:>11.4f}   (the run's metrics/train_baseline.json, every test map)")


def main(argv: list[str] | None = None) -> int:
    parser = after_run_parser(__doc__)
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), type=_lever_name,
                        help=f"levers to measure, each one of {', '.join(LEVERS)} or several joined by +")
    parser.add_argument("--baseline", action="store_true",
                        help="also retrain the baseline under each lever, for the run's baseline steps")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    if not (project / DATASET_DIR).is_dir() or not (project / MODELS.vae).is_file():
        print(f"error: {project} has no prepared data or VAE: run `make demo` (or dvc repro train_vae) first",
              file=sys.stderr)
        return 2
    params = load_params(args.params or project / "params.yaml")
    baseline_file = project / METRICS_DIR / "train_baseline.json"
    baseline = json.loads(baseline_file.read_text()) if baseline_file.is_file() else None
    baseline_steps = int((baseline or {}).get("parity_steps") or params.baseline.train.total_steps)
    rows = []
    with tempfile.TemporaryDirectory(prefix="levers-") as work:
        for name in args.levers:
            print(f"levers: training {name}", file=sys.stderr, flush=True)
            lever_params = compose(name)(params)
            rows.append(measure(name, lever_params, project, Path(work)))
            if args.baseline:
                print(f"levers: training the baseline under {name} ({baseline_steps} steps)", file=sys.stderr,
                      flush=True)
                rows[-1].update(measure_baseline(lever_params, project, Path(work), baseline_steps))
            if args.out:
                args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print_table(rows, baseline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
