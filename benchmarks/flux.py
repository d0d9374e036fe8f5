"""Serving speed of RadioDiff-Flux beside the full sampler, fewer-step DDIM and the baseline.

    .venv/bin/python benchmarks/flux.py [--batch 48] [--repeats 3] [--ddpm-steps 100] [--bank-sizes 1000 100000]

Prints three tables, all measured in this run:
1. ms per map and maps per second at batch 1 and at a full batch, per method, timed side by
   side in interleaved rounds (median and min-max over the rounds: the machine is shared);
2. midpoint-bank lookups (cold open + first get, warm get, nearest) on temporary banks;
3. stage 2's achieved FLOP/s (torch's FLOP counter, per map) against a float32 matmul peak.
Without trained model files the default profile's networks get random weights: speed does
not depend on the weights. Times are wall clock, float32, no grad.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from radiodiff.bank import EMBEDDING_DIM, BankKey, Midpoint, MidpointBank
from radiodiff.config import load_params
from radiodiff.data.conditions import dynamic_channel_mask
from radiodiff.artifacts.baseline import build_baseline, load_baseline
from radiodiff.artifacts.denoiser import build_unet, load_ldm
from radiodiff.artifacts.keys import model_hash
from radiodiff.artifacts.layout import ModelFiles
from radiodiff.artifacts.vae import build_vae
from radiodiff.diffusion.process import make_process
from radiodiff.diffusion.sampling import sample_loop
from radiodiff.flux import flux_plan, sampler_hash, scene_noise, stage1_midpoint, stage2_decode, static_condition
from radiodiff.generation import LatentDiffusion, generate, initial_noise
from radiodiff.stages.baseline import predict_baseline
from radiodiff.training.rng import seeded_generator

ROOT = Path(__file__).resolve().parents[1]
DDIM_STEPS = (1, 2, 5, 10, 20)
TAIL_STEPS = (1, 2, 5)
SERVING_SCENES = 1000  # entries of the bank the Flux stage-2 rows read from
PUT_ROWS = 25_000  # entries per put when filling a lookup bank: "a few large puts"
WARM_GETS, NEAREST_QUERIES = 200, 50


@dataclass(frozen=True)
class Setup:
    """The networks under test and what the header says about them."""

    model: LatentDiffusion
    baseline: torch.nn.Module
    dynamic_mask: tuple[bool, ...]
    model_hash: str
    source: str


def load_setup(params, params_name: str, models: Path) -> Setup:
    """Trained networks from `models` when their files exist, else the profile's with random weights."""
    files = ModelFiles(models)
    ldm_path, vae_path, baseline_path = files.ldm, files.vae, files.baseline
    if ldm_path.is_file() and vae_path.is_file():
        model, _, condition = load_ldm(ldm_path, vae_path)
        ldm_source, digest = f"trained {ldm_path} + {vae_path}", model_hash(ldm_path)
    else:
        vae = build_vae(params.vae).eval()
        condition = params.condition
        unet = build_unet(params.ldm, condition.channels, vae.latent_channels).eval()
        model = LatentDiffusion(unet, vae, make_process(params.ldm.diffusion), 1.0)
        ldm_source, digest = f"RANDOM-weight LDM + VAE of {params_name}", "random-weights"
    if baseline_path.is_file():
        baseline, _ = load_baseline(baseline_path)
        baseline_source = f"trained {baseline_path}"
    else:
        baseline = build_baseline(params.baseline, condition.channels).eval()
        baseline_source = f"RANDOM-weight baseline of {params_name}"
    return Setup(model, baseline, dynamic_channel_mask(condition.encodings), digest,
                 f"{ldm_source}; {baseline_source}")


def random_conditions(batch: int, channels: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """Condition `[B, C, H, W]`: a {0, 1} buildings channel and uniform values elsewhere."""
    cond = torch.rand(batch, channels, side, side, generator=generator)
    cond[:, 0] = (cond[:, 0] > 0.7).float()
    return cond


def fill_random_bank(root: Path, key: BankKey, count: int, shape: tuple[int, ...], seed: int) -> float:
    """Write `count` random float32 latents `shape` (scenes 0..count-1) in puts of PUT_ROWS; seconds."""
    rng = np.random.default_rng(seed)
    bank, seconds = MidpointBank(root, key), 0.0
    for start in range(0, count, PUT_ROWS):
        rows = min(PUT_ROWS, count - start)
        latents = rng.standard_normal((rows, *shape), dtype=np.float32)
        embeddings = rng.random((rows, EMBEDDING_DIM), dtype=np.float32)
        midpoints = [Midpoint(start + i, latents[i], embeddings[i]) for i in range(rows)]
        begin = time.perf_counter()
        if bank.put(midpoints) != rows:
            raise RuntimeError(f"bank put wrote fewer than {rows} entries")
        seconds += time.perf_counter() - begin
    return seconds


# A method runs one batch of maps (condition [B, C, H, W], scene ids [B]) and returns its seconds.
Method = Callable[[torch.Tensor, np.ndarray], float]


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        work()
    return time.perf_counter() - start


def reference_sampler(model: LatentDiffusion):
    """(process, steps) of the slow reference: DDPM over all T steps, or T steps of the model's own sampler."""
    return model.process.full_trajectory() or (model.process, model.process.num_train_steps)


def ddpm_method(model: LatentDiffusion, steps: int) -> Method:
    """The reference trajectory (`reference_sampler`); the first `steps` are timed, the loop extrapolated."""
    process, total = reference_sampler(model)
    timesteps = process.timesteps(total)

    def run(cond, scenes):
        generator = seeded_generator(0)
        start = time.perf_counter()
        with torch.no_grad():
            x_start = initial_noise(model.latent_shape(cond), generator)
            latent = sample_loop(process, model.denoise_fn(cond), x_start, timesteps, stop_index=steps,
                                 generator=generator)
            loop = time.perf_counter() - start
            model.decode(latent, cond[:, 0])
        decode = time.perf_counter() - start - loop
        return loop * total / steps + decode

    return run


def flux_stage2_method(model: LatentDiffusion, bank: MidpointBank, tail: int, t_mid: int, prefix: int) -> Method:
    """A bank hit: one `get` per map, stage 2 (`tail` UNet calls) and the decode."""
    plan = flux_plan(model.process, t_mid, prefix, tail)

    def serve(cond, scenes):
        latents = [bank.get(int(scene)) for scene in scenes]
        if any(latent is None for latent in latents):
            raise RuntimeError("the serving bank missed a scene")
        return stage2_decode(model, torch.from_numpy(np.stack(latents)), cond, plan)

    return lambda cond, scenes: timed(lambda: serve(cond, scenes))


def decode_method(model: LatentDiffusion, cond: torch.Tensor) -> float:
    latent = torch.randn(model.latent_shape(cond))
    return timed(lambda: model.decode(latent, cond[:, 0]))


def methods(setup: Setup, args, t_mid: int, prefix: int, bank: MidpointBank) -> dict[str, Method]:
    """Every timed method by table label, in table order."""
    model = setup.model
    process, T = reference_sampler(model)
    steps = min(args.ddpm_steps, T)
    label = f"{process.name.upper()}-{T}" + (f" ({steps} timed, x{T / steps:g})" if steps < T else "")
    table: dict[str, Method] = {label: ddpm_method(model, steps)}
    for n in DDIM_STEPS:
        table[f"DDIM-{n}"] = lambda c, s, n=n: timed(lambda: generate(model, c, steps=n, generator=seeded_generator(0)))
    for tail in TAIL_STEPS:
        table[f"Flux stage 2, tail {tail} (get)"] = flux_stage2_method(model, bank, tail, t_mid, prefix)
    plan = flux_plan(model.process, t_mid, prefix, 1)

    def stage1(cond, scenes):
        static = static_condition(cond, setup.dynamic_mask)
        return stage1_midpoint(model, static, plan, scene_noise(model.latent_shape(cond)[1:], scenes, 0))

    table[f"Flux stage 1, prefix {prefix}"] = lambda c, s: timed(lambda: stage1(c, s))
    table["baseline"] = lambda c, s: timed(lambda: predict_baseline(setup.baseline, c))
    table["VAE decode"] = lambda c, s: decode_method(model, c)
    return table


def time_methods(table: dict[str, Method], single: list, full: tuple, repeats: int) -> dict:
    """ms per map of each method at batch 1 and full, one value per round: {label: ([b1], [bN])}."""
    out = {label: ([], []) for label in table}
    for _ in range(repeats):
        for label, run in table.items():
            maps = single[:1] if label.startswith("DDPM") else single  # one map of the full trajectory
            out[label][0].append(1e3 * sum(run(*batch) for batch in maps) / len(maps))
            out[label][1].append(1e3 * run(*full) / len(full[1]))
    return out


def print_speed(times: dict, batch: int) -> None:
    def cell(values):
        med = statistics.median(values)
        return f"{med:10.1f} [{min(values):9.1f}-{max(values):9.1f}] {1e3 / med:9.3f}"

    ddpm = [statistics.median(values) for values in next(iter(times.values()))]
    head = f"{'method':34s} {'b1 ms/map':>10s} {'[min-max]':^21s} {'maps/s':>9s} " \
           f"{'b' + str(batch) + ' ms/map':>10s} {'[min-max]':^21s} {'maps/s':>9s} {'x DDPM':>7s}"
    print(head, "-" * len(head), sep="\n")
    for label, (single, full) in times.items():
        print(f"{label:34s} {cell(single)} {cell(full)} {ddpm[1] / statistics.median(full):7.1f}")


def lookup_ms(root: Path, key: BankKey, size: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """ms of a cold open + first get, median warm get and median nearest in the bank at `root`."""
    bank = MidpointBank(root, key)  # a fresh object: it builds its index on the first call
    first = int(rng.integers(size))
    cold = timed(lambda: bank.get(first))
    warm = [timed(lambda s=int(s): bank.get(s)) for s in rng.integers(size, size=WARM_GETS)]
    queries = rng.random((NEAREST_QUERIES, EMBEDDING_DIM), dtype=np.float32)
    near = [timed(lambda q=q: bank.nearest(q, float("inf"))) for q in queries]
    return 1e3 * cold, 1e3 * statistics.median(warm), 1e3 * statistics.median(near)


def bank_lookups(key: BankKey, shape: tuple[int, ...], sizes: list[int]) -> None:
    """Write temporary banks of `sizes` entries and print their lookup times."""
    head = f"{'entries':>8s} {'MB on disk':>10s} {'write s':>8s} {'cold open+get ms':>16s} " \
           f"{'warm get ms':>11s} {'nearest ms':>10s}"
    print(head, "-" * len(head), sep="\n")
    rng = np.random.default_rng(1)
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="flux-bench-bank-") as tmp:
            write_s = fill_random_bank(Path(tmp), key, size, shape, seed=size)
            megabytes = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
            cold, warm, near = lookup_ms(Path(tmp), key, size, rng)
        print(f"{size:8d} {megabytes:10.1f} {write_s:8.2f} {cold:16.1f} {warm:11.2f} {near:10.2f}", flush=True)


def matmul_peak(sizes=(1024, 2048), tries: int = 4) -> tuple[float, int]:
    """Best float32 matmul FLOP/s over square sizes `sizes` (and the size that reached it)."""
    best = (0.0, 0)
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        seconds = min(timed(lambda a=a, b=b: torch.mm(a, b)) for _ in range(tries))
        best = max(best, (2 * n**3 / seconds, n))
    return best


def stage2_flops(model: LatentDiffusion, cond: torch.Tensor, t_mid: int, prefix: int, repeats: int) -> None:
    """Per tail: FLOPs per map of stage 2 + decode, and FLOP/s at cond's batch vs the matmul peak."""
    peak, peak_n = matmul_peak()
    print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s (best of 4 at {peak_n}x{peak_n}, sizes 1024 and 2048)")
    head = f"{'tail':>4s} {'GFLOP/map':>9s} {'best ms/map':>11s} {'median ms/map':>13s} " \
           f"{'best GFLOP/s':>12s} {'of peak':>7s}"
    print(head, "-" * len(head), sep="\n")
    batch = cond.shape[0]
    midpoint = torch.randn(model.latent_shape(cond))
    for tail in TAIL_STEPS:
        plan = flux_plan(model.process, t_mid, prefix, tail)
        counter = FlopCounterMode(display=False)
        with counter:
            stage2_decode(model, midpoint[:1], cond[:1], plan)
        flops = counter.get_total_flops()
        seconds = [timed(lambda plan=plan: stage2_decode(model, midpoint, cond, plan)) for _ in range(repeats + 1)][1:]
        achieved = flops * batch / min(seconds)
        print(f"{tail:4d} {flops / 1e9:9.3f} {1e3 * min(seconds) / batch:11.2f} "
              f"{1e3 * statistics.median(seconds) / batch:13.2f} {achieved / 1e9:12.1f} {achieved / peak:7.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="folder of ldm.pt, vae.pt, baseline.pt")
    parser.add_argument("--batch", type=int, default=48, help="the full batch (default 48)")
    parser.add_argument("--maps", type=int, default=4, help="batch-1 maps per method and round (full DDPM: 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (default 3)")
    parser.add_argument("--ddpm-steps", type=int, default=100,
                        help="DDPM steps actually timed; the loop is extrapolated linearly to all T (default 100)")
    parser.add_argument("--bank-sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if min(args.batch, args.maps, args.repeats, args.ddpm_steps, *args.bank_sizes) < 1:
        parser.error("--batch, --maps, --repeats, --ddpm-steps and --bank-sizes must be >= 1")
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    setup = load_setup(params, args.params.name, args.models)
    model, t_mid, prefix = setup.model, params.flux.t_mid, params.flux.prefix_steps
    side, channels = params.prepare.resolution, len(setup.dynamic_mask)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs; {setup.source}")
    print(f"maps {side}x{side}, latent {list(model.latent_shape(torch.zeros(1, channels, side, side))[1:])}, "
          f"T={model.process.num_train_steps}, t_mid={t_mid}, prefix_steps={prefix}; float32, no grad, wall clock")
    generator = seeded_generator(0)
    full_cond = random_conditions(args.batch, channels, side, generator)
    shape = tuple(model.latent_shape(full_cond)[1:])
    plan = flux_plan(model.process, t_mid, prefix, 1)
    key = BankKey(model_hash=setup.model_hash, sampler_hash=sampler_hash(model.process, plan), t_mid=plan.t_mid)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="flux-bench-serving-") as tmp:
        fill_random_bank(Path(tmp), key, SERVING_SCENES, shape, seed=0)
        table = methods(setup, args, t_mid, prefix, MidpointBank(tmp, key))
        single = [(random_conditions(1, channels, side, generator), rng.integers(SERVING_SCENES, size=1))
                  for _ in range(args.maps)]
        full = (full_cond, rng.integers(SERVING_SCENES, size=args.batch))
        for batch in (single[0], full):  # warm-up: every network at both batch sizes, twice
            for label in ("DDIM-5", f"Flux stage 1, prefix {prefix}", "baseline") * 2:
                table[label](*batch)
        print(f"\n1. Speed: median [min-max] of {args.repeats} interleaved rounds; batch 1 = mean of "
              f"{args.maps} single-map calls (DDPM: 1); Flux stage 2 reads a {SERVING_SCENES}-entry bank")
        print_speed(time_methods(table, single, full, args.repeats), args.batch)
    print(f"\n2. Bank lookups: latents {list(shape)} float32; cold = new bank object (OS cache warm); "
          f"warm get median of {WARM_GETS}, nearest (no distance bound) median of {NEAREST_QUERIES}")
    bank_lookups(key, shape, args.bank_sizes)
    print(f"\n3. Stage 2 + decode FLOPs (torch FLOP counter, per map) at batch {args.batch}, "
          f"best/median of {args.repeats}, {torch.get_num_threads()} threads")
    stage2_flops(model, full_cond, t_mid, prefix, args.repeats)
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
