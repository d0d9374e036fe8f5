"""The residual lever: the denoiser generates the correction to the supervised baseline's map,
against the baseline trained for the whole chain's time.

    .venv/bin/python benchmarks/residual.py [--project .] [--params params.yaml] [--out residual.json]

Run after a pipeline run (`make demo`): it reads that run's prepared data, VAE and baseline
(`models/baseline.pt`). The residual model is the `ldm` section's denoiser, trained for its
steps from the same seed, on

    target latent  r = k (E(y) - E(b)),  condition  [c, b]

where y is the map, b the baseline's prediction for condition c, E the VAE's scaled encoder and
k makes r unit-variance over the train set (as the latent scale does for E(y)). A sample r^ is
served two ways: through the decoder, D(E(b) + r^ / k), which carries the VAE's reconstruction
floor, and as a pixel-space correction, b + D(E(b) + r^ / k) - D(E(b)), where the decoder's
error on b cancels to first order. The table also prints the oracle of the second (r^ the true
r), the ceiling of the formulation under this VAE.

Compute parity: the residual method costs the VAE's, the baseline's and its own training
seconds. The peer is the same baseline trained from scratch for that many seconds' worth of
steps (at the run's own step rate), scored on the same maps. One row each: NMSE mean, median,
p90 and over the darkest 10% of maps, Tx-response, car-response on the traffic pairs, and the
training seconds. Seconds are wall clock on a shared machine: compare rows of one run.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from radiodiff.artifacts.baseline import load_baseline, predict_baseline
from radiodiff.artifacts.denoiser import build_unet
from radiodiff.artifacts.layout import DATASET_DIR, METRICS_DIR, MODELS
from radiodiff.artifacts.vae import load_vae
from radiodiff.cli.arguments import positive_int
from radiodiff.config import load_params
from radiodiff.data.conditions import dynamic_channel_mask
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.diffusion.process import make_process
from radiodiff.diffusion.sampling import sample_loop
from radiodiff.evaluation.distribution import map_energy, nmse_distribution
from radiodiff.evaluation.scenarios import load_rows, select_traffic, traffic_scores
from radiodiff.generation import LatentDiffusion, initial_noise, trajectory_denoiser
from radiodiff.metrics import nmse, tx_response_ratio
from radiodiff.stages.baseline import train_baseline
from radiodiff.stages.latents import train_latents
from radiodiff.stages.ldm import denoiser_loss
from radiodiff.training.batching import loader_factory
from radiodiff.training.loop import train_loop
from radiodiff.training.rng import seeded_generator

from _after_run import after_run_parser  # this folder's helper: benchmarks run by path

BATCH = 64
SAMPLE_SEED = 1234


class ResidualDataset(torch.utils.data.Dataset):
    """Train items whose latent is the scaled residual `[3, h, w]` over the baseline and whose
    condition carries the baseline's map as one more channel `[C + 1, H, W]`."""

    def __init__(self, base, baseline_maps: torch.Tensor, residuals: torch.Tensor) -> None:
        self.base, self.baseline_maps, self.residuals = base, baseline_maps, residuals

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int) -> dict:
        sample = self.base[item]
        cond = torch.cat([sample["cond"], self.baseline_maps[item].float()])
        return {**sample, "cond": cond, "latent": self.residuals[item]}


def baseline_and_latent(baseline, model: LatentDiffusion, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline's map `[B, 1, H, W]` and its scaled latent `[B, 3, h, w]`."""
    b = predict_baseline(baseline, cond)
    return b, model.encode(b)


def residual_training_set(baseline, model: LatentDiffusion, latents) -> tuple[ResidualDataset, float]:
    """The train latents turned into residual items, and the residual scale k."""
    maps, residuals = [], []
    with torch.no_grad():
        for start in range(0, len(latents), BATCH):
            rows = [latents[i] for i in range(start, min(start + BATCH, len(latents)))]
            cond = torch.stack([row["cond"] for row in rows])
            b, z_b = baseline_and_latent(baseline, model, cond)
            maps.append(b.half())  # the baseline's map as a condition: half precision is plenty
            residuals.append(torch.stack([row["latent"] for row in rows]) - z_b)
    residual = torch.cat(residuals)
    scale = float(1.0 / residual.std())
    return ResidualDataset(latents.base, torch.cat(maps), residual * scale), scale


def predict(unet, model: LatentDiffusion, baseline, scale: float, cond: torch.Tensor, steps: int,
            seed: int = SAMPLE_SEED) -> dict[str, torch.Tensor]:
    """Both servings of `steps` sampler steps, and the baseline alone, for conditions `[B, C, H, W]`."""
    generator = seeded_generator(seed)
    out: dict[str, list[torch.Tensor]] = {"decoded": [], "corrected": [], "baseline": []}
    with torch.no_grad():
        for start in range(0, len(cond), BATCH):
            part = cond[start:start + BATCH]
            b, z_b = baseline_and_latent(baseline, model, part)
            x_start = initial_noise(model.latent_shape(part), generator)
            r = sample_loop(model.process, trajectory_denoiser(unet, torch.cat([part, b], 1)), x_start,
                            model.process.timesteps(steps), generator=generator)
            decoded = model.decode(z_b + r / scale, part[:, 0])
            out["decoded"].append(decoded)
            out["corrected"].append((b + decoded - model.decode(z_b, part[:, 0])).clamp(0, 1) * (part[:, :1] <= 0))
            out["baseline"].append(b)
    return {key: torch.cat(value) for key, value in out.items()}


def oracle(model: LatentDiffusion, baseline, cond: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """b + D(E(y)) - D(E(b)): the pixel correction with the true residual."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(cond), BATCH):
            part = cond[start:start + BATCH]
            b, z_b = baseline_and_latent(baseline, model, part)
            z_y = model.encode(gain[start:start + BATCH])
            parts.append((b + model.decode(z_y, part[:, 0]) - model.decode(z_b, part[:, 0])).clamp(0, 1)
                         * (part[:, :1] <= 0))
    return torch.cat(parts)


def scores(pred: torch.Tensor, gain: torch.Tensor, maps) -> dict[str, float]:
    per_map = nmse(pred, gain).numpy()
    shape = nmse_distribution(per_map, map_energy(gain))
    return {"nmse": float(per_map.mean()), "median": shape["nmse_median"], "p90": shape["nmse_p90"],
            "dark": shape["nmse_dark"], "tx_response": tx_response_ratio(pred, gain, maps)}


def main(argv: list[str] | None = None) -> int:
    parser = after_run_parser(__doc__)
    parser.add_argument("--steps", type=positive_int, nargs="+", default=[1, 5], metavar="N",
                        help="sampler steps to score")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    needed = [project / DATASET_DIR, project / MODELS.vae, project / MODELS.baseline,
              project / METRICS_DIR / "train_baseline.json", project / METRICS_DIR / "train_vae.json"]
    missing = [str(path.relative_to(project)) for path in needed if not path.exists()]
    if missing:
        print(f"error: {project} lacks {', '.join(missing)}: run `make demo` (or dvc repro train_baseline) first",
              file=sys.stderr)
        return 2
    params = load_params(args.params or project / "params.yaml")
    cfg, condition = params.ldm, params.condition
    if max(args.steps) > cfg.diffusion.num_steps:
        print(f"error: --steps must be at most the schedule's {cfg.diffusion.num_steps}", file=sys.stderr)
        return 2
    vae, latent_scale = load_vae(project / MODELS.vae, "cpu")
    process = make_process(cfg.diffusion)
    baseline, _ = load_baseline(project / MODELS.baseline)
    baseline_run = json.loads((project / METRICS_DIR / "train_baseline.json").read_text())
    vae_run = json.loads((project / METRICS_DIR / "train_vae.json").read_text())
    dataset_dir = project / DATASET_DIR

    with tempfile.TemporaryDirectory() as work:
        unet = build_unet(cfg, condition.channels + 1, vae.latent_channels, "cpu")
        model = LatentDiffusion(unet, vae, process, latent_scale)
        began = time.perf_counter()
        latents = train_latents(model, dataset_dir, condition.encodings, cfg.data.augment, Path(work))
        train_set, scale = residual_training_set(baseline, model, latents)
        prepare_s = time.perf_counter() - began
        print(f"residual: {len(train_set)} train items, scale {scale:.3f}, prepared in {prepare_s:.0f} s",
              file=sys.stderr, flush=True)
        mask = dynamic_channel_mask(condition.encodings) + (True,)
        result = train_loop(model=unet, loss_fn=denoiser_loss(process, 0.0, mask), config=cfg.train,
                            log=lambda metrics, step: None, progress=True,
                            batches=loader_factory(train_set, batch_size=cfg.data.batch_size, seed=cfg.train.seed,
                                                   num_workers=0),
                            checkpoint_dir=Path(work) / "residual", name="residual")
        residual_unet = result.ema.ema_model.eval()
        residual_s = prepare_s + result.train_seconds

        test = RadioMapDataset(dataset_dir, "test", condition.encodings)
        maps = load_rows(test, list(range(len(test))))
        rows: dict[str, dict] = {}
        for steps in args.steps:
            served = predict(residual_unet, model, baseline, scale, maps.cond, steps)
            rows[f"residual-{steps} decoded"] = scores(served["decoded"], maps.gain, maps.maps)
            rows[f"residual-{steps} corrected"] = scores(served["corrected"], maps.gain, maps.maps)
        rows["baseline (run's)"] = scores(served["baseline"], maps.gain, maps.maps)
        rows["oracle corrected"] = scores(oracle(model, baseline, maps.cond, maps.gain), maps.gain, maps.maps)

        pairs = select_traffic(test, test.index["map_id"].unique().tolist(), per_scene=len(test))
        if pairs is not None:  # the car-response of the fewest steps asked for
            fewest = min(args.steps)
            served = predict(residual_unet, model, baseline, scale, pairs.cond, fewest)
            for key in ("decoded", "corrected"):
                rows[f"residual-{fewest} {key}"]["car_response"] = traffic_scores(served[key], pairs)["car_response"]
            rows["baseline (run's)"]["car_response"] = traffic_scores(served["baseline"], pairs)["car_response"]

        chain_s = vae_run["train_seconds"] + baseline_run["train_seconds"] + residual_s
        peer_steps = round(baseline_run["steps_per_s"] * chain_s)
        train = replace(params.baseline.train, total_steps=peer_steps, val_every=peer_steps,
                        checkpoint_every=peer_steps)
        peer = train_baseline(replace(params.baseline, compute_parity=False, train=train), condition,
                              dataset_dir=dataset_dir, work_dir=Path(work), log=lambda metrics, step: None)
        with torch.no_grad():
            peer_pred = torch.cat([predict_baseline(peer.model, maps.cond[i:i + BATCH])
                                   for i in range(0, len(maps.cond), BATCH)])
        rows[f"baseline, {peer_steps} steps (peer)"] = scores(peer_pred, maps.gain, maps.maps)
        if pairs is not None:
            with torch.no_grad():
                rows[f"baseline, {peer_steps} steps (peer)"]["car_response"] = traffic_scores(
                    predict_baseline(peer.model, pairs.cond), pairs)["car_response"]

    seconds = {"vae": vae_run["train_seconds"], "baseline": baseline_run["train_seconds"],
               "residual (encode + train)": residual_s, "peer baseline": peer.metrics["train_seconds"]}
    print_table(rows, seconds, len(maps.maps))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "seconds": seconds, "scale": scale}, indent=2))
    return 0


def print_table(rows: dict[str, dict], seconds: dict[str, float], count: int) -> None:
    peer = next(value for key, value in rows.items() if key.endswith("(peer)"))
    print(f"{count} test maps; training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"{'method':<30} {'NMSE':>7} {'median':>7} {'p90':>7} {'dark':>7} {'Tx-resp':>7} {'car-resp':>8} "
          f"{'vs peer':>8}")
    for name, row in rows.items():
        print(f"{name:<30} {row['nmse']:>7.4f} {row['median']:>7.4f} {row['p90']:>7.4f} {row['dark']:>7.4f} "
              f"{row['tx_response']:>7.3f} {row.get('car_response', float('nan')):>8.3f} "
              f"{row['nmse'] / peer['nmse'] - 1:>+8.1%}")


if __name__ == "__main__":
    sys.exit(main())
