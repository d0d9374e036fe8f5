"""Throughput, memory and bf16 error of the paper-profile networks on one device, in one table.

    python benchmarks/gpu.py [--smoke] [--device auto|cpu|cuda|cuda:N] [--profile FILE]

Self-contained: it simulates its own 256 x 256 scenes (the project's simulator on shipped
RadioMapSeer layouts) and needs only torch, numpy, scipy, pandas, pyarrow, einops and PyYAML
(no dvc, mlflow, prefect or optuna, no network), so it runs on a bare accelerator machine.
Rows:
- train_*: the stage's own loss and AdamW at the profile's micro-batch, bf16 autocast:
  samples/s, peak memory, and model FLOP utilisation (FLOPs counted by torch's FLOP counter
  on one forward + backward, against the device's dense bf16 peak where it is known).
- sample_*: ms/map and maps/s at batch 1 and 64 (the samplers at the profile's resolution:
  Flux stage 2 with tail 1 and 5, DDIM-1/5/20, decoupled-1/5, flow-1/2, the baseline), bf16 autocast,
  the device synchronised before each clock read; `nmse_bf16_vs_fp32` is the NMSE of the
  bf16 maps against the fp32 maps of the same seeds and weights.
`--smoke` uses the default profile's small networks at 64 x 64 with tiny batches: a check that
the script works, in about a minute on a 2-core CPU. Networks are freshly initialised and
trained only for the timed steps: speeds and memory are real, accuracies are not.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a bare checkout: radiodiff need not be installed

from radiodiff import devices  # noqa: E402
from radiodiff.artifacts.baseline import build_baseline  # noqa: E402
from radiodiff.artifacts.denoiser import build_unet  # noqa: E402
from radiodiff.artifacts.vae import build_vae  # noqa: E402
from radiodiff.config import SOURCE_MAP_SIZE, LDMConfig, Params, load_params  # noqa: E402
from radiodiff.data.conditions import dynamic_channel_mask, encode_condition  # noqa: E402
from radiodiff.data.geometry import load_geometry  # noqa: E402
from radiodiff.data.resample import downsample_gain, majority  # noqa: E402
from radiodiff.data.targets import simulated_gray  # noqa: E402
from radiodiff.diffusion.process import make_process  # noqa: E402
from radiodiff.flux import flux_plan, scene_noise, stage1_midpoint, stage2_decode  # noqa: E402
from radiodiff.generation import LatentDiffusion, generate  # noqa: E402
from radiodiff.metrics import nmse  # noqa: E402
from radiodiff.options import Precision, Prediction  # noqa: E402
from radiodiff.stages import baseline as baseline_stage  # noqa: E402
from radiodiff.stages import ldm as ldm_stage  # noqa: E402
from radiodiff.stages import vae as vae_stage  # noqa: E402
from radiodiff.stages.baseline import predict_baseline  # noqa: E402
from radiodiff.training.rng import seeded_generator  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name fragment.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much the benchmark does: a smoke run, or the real one."""

    resolution: int
    scenes: int
    tx_per_scene: int
    train_batch: int | None  # None: the profile's micro-batch
    warmup_steps: int
    timed_steps: int
    sample_batches: tuple[int, ...]
    repeats: int


FULL = Sizes(resolution=256, scenes=4, tx_per_scene=4, train_batch=None, warmup_steps=3, timed_steps=10,
             sample_batches=(1, 64), repeats=5)
SMOKE = Sizes(resolution=64, scenes=2, tx_per_scene=2, train_batch=2, warmup_steps=1, timed_steps=2,
              sample_batches=(1, 4), repeats=2)


def simulated_batch(params: Params, sizes: Sizes) -> dict[str, torch.Tensor]:
    """Simulated samples at the benchmark's resolution: `gain` `[N, 1, R, R]`, `cond` `[N, C, R, R]`."""
    factor = SOURCE_MAP_SIZE // sizes.resolution
    geometry = load_geometry()
    gains, conds, ids = [], [], []
    for map_id in range(sizes.scenes):
        scene = geometry.scene(map_id)
        pixels = [scene.tx(k) for k in range(sizes.tx_per_scene)]
        gray = simulated_gray(scene, pixels, dynamic=False)
        gain = downsample_gain(gray.astype(np.float32) / 255.0, scene.buildings, factor)
        buildings = majority(scene.buildings, factor)
        cars = np.zeros_like(buildings)  # the static city: the paper profile has no traffic
        for k, (row, col) in enumerate(pixels):
            gains.append(gain[k][None])
            conds.append(encode_condition(buildings, cars, row // factor, col // factor, params.condition.encodings))
            ids.append(map_id)
    return {"gain": torch.from_numpy(np.stack(gains)), "cond": torch.from_numpy(np.stack(conds)),
            "map_id": torch.tensor(ids)}


def repeat_to(batch: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """The first `size` samples of the batch repeated cyclically."""
    rows = torch.arange(size) % batch["gain"].shape[0]
    return {key: value[rows] for key, value in batch.items()}


def peak_tflops(device: torch.device) -> float | None:
    name = devices.device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def train_row(name: str, model: torch.nn.Module, loss_fn, batch: dict, device: torch.device, sizes: Sizes) -> dict:
    """samples/s, peak GiB and FLOP utilisation of `loss_fn` + backward + AdamW under bf16 autocast."""
    from torch.utils.flop_counter import FlopCounterMode

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    autocast = devices.autocast(device, devices.resolve_precision(Precision.BF16, device))
    batch = devices.to_device(batch, device)
    one = {key: value[:1] for key, value in batch.items()}
    counter = FlopCounterMode(display=False)
    with counter, autocast:
        loss_fn(model, one, 0, seeded_generator(0, device))[0].backward()
    flops_per_sample = counter.get_total_flops()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(index: int) -> None:
        with autocast:
            loss, _ = loss_fn(model, batch, index, seeded_generator(index, device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for index in range(sizes.warmup_steps):
        step(index)
    devices.synchronize(device)
    started = time.perf_counter()
    for index in range(sizes.timed_steps):
        step(sizes.warmup_steps + index)
    devices.synchronize(device)
    samples_per_s = sizes.timed_steps * batch["gain"].shape[0] / (time.perf_counter() - started)
    peak = peak_tflops(device)
    return {"row": name, "batch": batch["gain"].shape[0], "samples_per_s": samples_per_s,
            "peak_gib": devices.peak_memory_gib(device),
            "mfu": None if peak is None else samples_per_s * flops_per_sample / (peak * 1e12)}


def timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds of `fn()` over `repeats` runs after one warm-up, and its last output."""
    with torch.no_grad():
        out = fn()
        times = []
        for _ in range(repeats):
            devices.synchronize(device)
            started = time.perf_counter()
            out = fn()
            devices.synchronize(device)
            times.append(time.perf_counter() - started)
    return statistics.median(times), out


def sampling_rows(models: dict[str, LatentDiffusion], baseline, params: Params, batch: dict, device: torch.device,
                  sizes: Sizes) -> list[dict]:
    """ms/map and maps/s of every sampler at each batch size, and its bf16-vs-fp32 map NMSE."""
    flux = params.flux
    rows = []
    for size in sizes.sample_batches:
        cond = repeat_to(batch, size)["cond"].to(device)
        ids = repeat_to(batch, size)["map_id"].tolist()
        v_model = models["v"]
        start = scene_noise(v_model.latent_shape(cond)[1:], ids, 0)
        methods = {}
        for tail in (1, 5):
            plan = flux_plan(v_model.process, flux.t_mid, flux.prefix_steps, tail)
            static = cond * torch.tensor([not d for d in dynamic_channel_mask(params.condition.encodings)],
                                         device=device)[None, :, None, None]
            midpoint = stage1_midpoint(v_model.with_precision(Precision.FP32), static, plan, start)
            methods[f"flux_tail{tail}"] = (lambda m, plan=plan, mid=midpoint: stage2_decode(m, mid, cond, plan), "v")
        for steps in (1, 5, 20):
            methods[f"ddim_{steps}"] = (lambda m, n=steps: generate(m, cond, steps=n, generator=seeded_generator(0)), "v")
        for steps in (1, 5):
            methods[f"decoupled_{steps}"] = (lambda m, n=steps: generate(m, cond, steps=n, generator=seeded_generator(0)),
                                             "kc")
        for steps in (1, 2):  # flow matching's few-step Euler sampler
            methods[f"flow_{steps}"] = (lambda m, n=steps: generate(m, cond, steps=n, generator=seeded_generator(0)),
                                        "flow")
        for name, (run, kind) in methods.items():
            fp32 = models[kind].with_precision(Precision.FP32)
            bf16 = models[kind].with_precision(devices.resolve_precision(Precision.BF16, device))
            seconds, maps_bf16 = timed(lambda: run(bf16), device, sizes.repeats)
            maps_fp32 = run(fp32)
            rows.append(_sample_row(f"sample_{name}", size, seconds, maps_bf16, maps_fp32))
        autocast = devices.autocast(device, devices.resolve_precision(Precision.BF16, device))

        def run_baseline(bf16: bool):
            with (autocast if bf16 else devices.autocast(device, Precision.FP32)):
                return predict_baseline(baseline, cond)

        seconds, maps_bf16 = timed(lambda: run_baseline(True), device, sizes.repeats)
        with torch.no_grad():
            maps_fp32 = run_baseline(False)
        rows.append(_sample_row("sample_baseline", size, seconds, maps_bf16, maps_fp32))
    return rows


def _sample_row(name: str, size: int, seconds: float, maps_bf16: torch.Tensor, maps_fp32: torch.Tensor) -> dict:
    error = float(nmse(maps_bf16.float().cpu(), maps_fp32.float().cpu()).mean())
    return {"row": name, "batch": size, "ms_per_map": 1e3 * seconds / size, "maps_per_s": size / seconds,
            "nmse_bf16_vs_fp32": error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (default profile, 64x64): a quick check")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--profile", type=Path, help="params file (default: profiles/paper.yaml; --smoke: params.yaml)")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    profile = args.profile or (ROOT / "params.yaml" if args.smoke else ROOT / "profiles" / "paper.yaml")
    params = load_params(profile)
    device = devices.resolve_device(args.device)
    started = time.perf_counter()
    batch = simulated_batch(params, sizes)
    channels = params.condition.channels
    micro = lambda cfg: sizes.train_batch or cfg.data.batch_size  # noqa: E731

    torch.manual_seed(0)
    vae = build_vae(params.vae, device).train()
    rows = [train_row("train_vae", vae, vae_stage._loss_fn(params.vae), repeat_to(batch, micro(params.vae)),
                      device, sizes)]
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(g.to(device) * 2 - 1).mode().float().cpu() for g in batch["gain"].split(8)])
    scale = 1.0 / float(latents.std())
    models = {}
    for kind in (Prediction.V, Prediction.KC, Prediction.FLOW):
        cfg: LDMConfig = dataclasses.replace(params.ldm, diffusion=dataclasses.replace(params.ldm.diffusion,
                                                                                       prediction=kind))
        unet = build_unet(cfg, channels, vae.latent_channels, device).train()
        process = make_process(cfg.diffusion)
        loss_fn = ldm_stage._loss_fn(process, cfg.condition_dropout, dynamic_channel_mask(params.condition.encodings))
        with_latents = repeat_to({**batch, "latent": latents * scale}, micro(params.ldm))
        rows.append(train_row(f"train_ldm_{kind.value}", unet, loss_fn, with_latents, device, sizes))
        models[kind.value] = LatentDiffusion(unet.eval(), vae, process, scale)
    baseline = build_baseline(params.baseline, channels, device).train()
    rows.append(train_row("train_baseline", baseline, baseline_stage._loss_fn, repeat_to(batch, micro(params.baseline)),
                          device, sizes))
    rows += sampling_rows(models, baseline.eval(), params, batch, device, sizes)

    table = pd.DataFrame(rows)
    print(f"benchmarks/gpu.py on {devices.device_name(device)} ({device}), profile {profile.name}, "
          f"{sizes.resolution}x{sizes.resolution}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s; "
          "training and timed sampling under bf16 autocast")
    print(table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
