"""What the Flux tail and its few-step control are fine-tuned on, measured side by side.

    .venv/bin/python benchmarks/tail_loss.py [--project .] [--params params.yaml] [--variants ...]
                                             [--out tail_loss.json]

Run after a pipeline run (`make demo`): it reads that run's prepared data, denoiser and midpoint
bank, then fine-tunes a copy of the denoiser once per variant and kind, from the same seed and
for params' `flux.tail_tune` steps:

- the Flux tail (`tune_tail`), scored at the served plan: each test map's static midpoint at
  `flux.t_mid`, then `flux.tail_steps` calls under the full condition;
- its control (`tune_few_step`), scored on the same calls from the seeded scene noise.

Every test map is scored over `flux.seeds`: NMSE mean, median and p90, the Tx-response, and on
the test split's traffic pairs (the same Tx with and without the layout's cars) the
car-response and the NMSE with the cars; the tails also at each other t_mid of the bank (NMSE,
every test map, the first seed). The `untuned` rows are the denoiser itself. Variants
(`VARIANTS`), each a change of `flux.tail_tune`:

- diffusion: the objective's loss on the path from the start latent, at lr 2e-4 (the setting
  that preceded the decoded loss);
- diffusion_lr: the same loss at the decoded variant's lr, so that the lr is not mistaken for
  the loss;
- decoded: the served maps' NMSE through the frozen VAE decoder, at params' lr (1e-3 in the
  default profile);
- decoded_path: the decoded loss plus 0.1 times the path loss at every t_mid of the bank
  (`tail_tune.path_loss_weight`), which also keeps the tail trained for the other t_mids;
- decoded_path_lr2x / decoded_path_w0.3: the same at twice the default lr (2e-3), and with 0.3
  times the path loss.

Training seconds are wall clock on a shared machine: compare rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from radiodiff.artifacts.denoiser import load_ldm
from radiodiff.artifacts.layout import BANK_DIR, DATASET_DIR, MODELS
from radiodiff.config import FluxConfig, Params, TailTuneConfig, load_params
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.evaluation.distribution import map_energy, nmse_distribution
from radiodiff.evaluation.scenarios import load_rows, select_traffic, traffic_scores
from radiodiff.flux import flux_plan, full_plan, scene_noise, stage1_midpoint, stage2_decode, static_conditions
from radiodiff.generation import LatentDiffusion
from radiodiff.metrics import nmse, tx_response_ratio
from radiodiff.options import TailLoss
from radiodiff.stages.few_step import train_few_step
from radiodiff.stages.tail import train_tail

from _after_run import after_run_parser  # this folder's helper: benchmarks run by path

Variant = Callable[[TailTuneConfig], TailTuneConfig]


def _with(loss: TailLoss, lr: float | None = None, path_loss_weight: float = 0.0) -> Variant:
    def apply(tune: TailTuneConfig) -> TailTuneConfig:
        optim = tune.train.optim if lr is None else replace(tune.train.optim, lr=lr)
        return replace(tune, loss=loss, path_loss_weight=path_loss_weight, train=replace(tune.train, optim=optim))
    return apply


VARIANTS: dict[str, Variant] = {
    "diffusion": _with(TailLoss.DIFFUSION, lr=2.0e-4),
    "diffusion_lr": _with(TailLoss.DIFFUSION),
    "decoded": _with(TailLoss.DECODED),
    "decoded_path": _with(TailLoss.DECODED, path_loss_weight=0.1),
    "decoded_path_lr2x": _with(TailLoss.DECODED, lr=2.0e-3, path_loss_weight=0.1),
    "decoded_path_w0.3": _with(TailLoss.DECODED, path_loss_weight=0.3),
}


def start_latents(model: LatentDiffusion, cfg: FluxConfig, cond: torch.Tensor, maps: tuple[int, ...],
                  seed: int, from_bank: bool) -> torch.Tensor:
    """Each map's start latent of the scored plan: the static midpoint at `cfg.t_mid` (the
    bank's construction: seeded scene noise through the prefix under the buildings alone), or the
    scene noise itself for the few-step control."""
    noise = scene_noise(model.latent_shape(cond)[1:], maps, seed)
    if not from_bank:
        return noise
    plan = flux_plan(model.process, cfg.t_mid, cfg.prefix_steps, cfg.tail_steps)
    return stage1_midpoint(model, static_conditions(cond[:, 0].numpy() > 0, cond.shape[1]), plan, noise)


def other_t_mids(model: LatentDiffusion, net: torch.nn.Module, cfg: FluxConfig,
                 test: RadioMapDataset) -> dict[str, float]:
    """NMSE of `net` as the Flux tail at each bank t_mid other than the served one, every test
    map, the first seed: whether the fine-tuning kept the tail a denoiser there."""
    everything = load_rows(test, list(range(len(test))))
    out = {}
    for t_mid in cfg.t_mids:
        if t_mid == cfg.t_mid:
            continue
        at = replace(cfg, t_mid=t_mid)
        plan = flux_plan(model.process, t_mid, cfg.prefix_steps, cfg.tail_steps)
        start = start_latents(model, at, everything.cond, everything.maps, cfg.seeds[0], True)
        pred = stage2_decode(model, start, everything.cond, plan,
                             denoise_fn=lambda x, t: net(x, t, everything.cond.to(model.device))).cpu()
        out[f"t{t_mid}_nmse"] = float(nmse(pred, everything.gain).mean())
    return out


def score(model: LatentDiffusion, net: torch.nn.Module, cfg: FluxConfig, test: RadioMapDataset,
          from_bank: bool) -> dict[str, float]:
    """The plan's maps by `net` on every test map over `cfg.seeds`, and on the traffic pairs."""
    plan = (flux_plan(model.process, cfg.t_mid, cfg.prefix_steps, cfg.tail_steps) if from_bank
            else full_plan(model.process, cfg.tail_steps))

    def run(cond: torch.Tensor, maps: tuple[int, ...], seed: int) -> torch.Tensor:
        start = start_latents(model, cfg, cond, maps, seed, from_bank)
        return stage2_decode(model, start, cond, plan, denoise_fn=lambda x, t: net(x, t, cond.to(model.device))).cpu()

    everything = load_rows(test, list(range(len(test))))
    per_map, tx_response, car_response, traffic_nmse = [], [], [], []
    pairs = select_traffic(test, test.index["map_id"].unique().tolist(), per_scene=len(test))
    for seed in cfg.seeds:
        pred = run(everything.cond, everything.maps, seed)
        per_map.append(nmse(pred, everything.gain))
        tx_response.append(tx_response_ratio(pred, everything.gain, everything.maps))
        if pairs is not None:
            scores = traffic_scores(run(pairs.cond, pairs.maps, seed), pairs)
            car_response.append(scores["car_response"])
            traffic_nmse.append(scores["nmse"])
    mean_per_map = torch.stack(per_map).mean(dim=0).numpy()
    shape = nmse_distribution(mean_per_map, map_energy(everything.gain))

    def average(values: list[float]) -> float:
        return float(sum(values) / len(values)) if values else float("nan")

    return {"nmse": float(mean_per_map.mean()), "median": shape["nmse_median"], "p90": shape["nmse_p90"],
            "tx_response": average(tx_response), "car_response": average(car_response),
            "traffic_nmse": average(traffic_nmse)}


def measure(variant: str, params: Params, project: Path, work: Path, model: LatentDiffusion,
            test: RadioMapDataset) -> list[dict]:
    """The tail and the control fine-tuned under `variant`, each scored."""
    cfg = replace(params.flux, tail_tune=VARIANTS[variant](params.flux.tail_tune))
    common = {"ldm_path": project / MODELS.ldm, "dataset_dir": project / DATASET_DIR, "work_dir": work,
              "log": lambda metrics, step: None, "progress": True}
    rows = []
    for kind, from_bank in (("flux_tail", True), ("few_step", False)):
        started = time.perf_counter()
        if from_bank:
            result = train_tail(model, cfg, params.condition, bank_dir=project / BANK_DIR, **common)
        else:
            result = train_few_step(model, cfg, params.condition, **common)
        seconds = time.perf_counter() - started
        net = result.ema.ema_model.eval()
        with torch.no_grad():
            rows.append({"variant": variant, "kind": kind, "train_s": seconds,
                         **score(model, net, cfg, test, from_bank),
                         **(other_t_mids(model, net, cfg, test) if from_bank else {})})
    return rows


def print_table(rows: list[dict], params: Params) -> None:
    cfg = params.flux
    print(f"served plan: t_mid {cfg.t_mid}, {cfg.tail_steps} tail call(s); control: {cfg.tail_steps} call(s) "
          f"from noise; {cfg.tail_tune.train.total_steps} fine-tuning steps; every test map x seeds {list(cfg.seeds)}")
    others = [f"t{t}_nmse" for t in cfg.t_mids if t != cfg.t_mid]
    print(f"{'variant':<17} {'kind':<10} {'train s':>7} | {'NMSE':>7} {'median':>7} {'p90':>7} {'Tx-resp':>7} "
          f"{'vs diff':>8} | {'car-resp':>8} {'cars NMSE':>9} | " + " ".join(f"{key:>10}" for key in others))
    reference = {row["kind"]: row for row in rows if row["variant"] == "diffusion"}
    for row in rows:
        base = reference.get(row["kind"])
        change = f"{row['nmse'] / base['nmse'] - 1:+.1%}" if base else ""
        print(f"{row['variant']:<17} {row['kind']:<10} {row['train_s']:>7.0f} | {row['nmse']:>7.4f} "
              f"{row['median']:>7.4f} {row['p90']:>7.4f} {row['tx_response']:>7.3f} {change:>8} | "
              f"{row['car_response']:>8.3f} {row['traffic_nmse']:>9.4f} | "
              + " ".join(f"{row[key]:>10.4f}" if key in row else f"{'':>10}" for key in others))


def _variant_name(name: str) -> str:
    if name not in VARIANTS:
        raise argparse.ArgumentTypeError(f"unknown variant {name}; known: {', '.join(VARIANTS)}")
    return name


def main(argv: list[str] | None = None) -> int:
    parser = after_run_parser(__doc__)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), type=_variant_name,
                        help=f"variants to measure, of {', '.join(VARIANTS)}")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    needed = [project / DATASET_DIR, project / MODELS.vae, project / MODELS.ldm, project / BANK_DIR]
    missing = [str(path) for path in needed if not path.exists()]
    if missing:
        print(f"error: missing {', '.join(missing)}: run `make demo` (or dvc repro build_bank) first", file=sys.stderr)
        return 2
    params = load_params(args.params or project / "params.yaml")
    model, _, condition = load_ldm(project / MODELS.ldm, project / MODELS.vae)
    test = RadioMapDataset(project / DATASET_DIR, "test", condition.encodings)
    with torch.no_grad():
        untuned = [{"variant": "untuned", "kind": kind, "train_s": 0.0,
                    **score(model, model.unet, params.flux, test, from_bank),
                    **(other_t_mids(model, model.unet, params.flux, test) if from_bank else {})}
                   for kind, from_bank in (("flux_tail", True), ("few_step", False))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tail-loss-") as work:
        for variant in args.variants:
            print(f"tail_loss: fine-tuning under {variant}", file=sys.stderr, flush=True)
            rows += measure(variant, params, project, Path(work), model, test)
            if args.out:
                args.out.write_text(json.dumps(untuned + rows, indent=2) + "\n")
    print_table(untuned + rows, params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
