"""Size and speed of every network, for the default and the paper profile.

Prints, per profile and network: parameters, GFLOPs per forward (torch's FLOP counter, at
batch 1), and the median ms per forward at batch 1 and at a full batch (no grad, float32 and
bf16 autocast). Run on demand: `.venv/bin/python benchmarks/models.py [--profiles default paper]`.
The machine is shared: medians of `--repeats` runs, and compare rows of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from radiodiff.config import load_params
from radiodiff.artifacts.baseline import build_baseline
from radiodiff.artifacts.denoiser import build_unet
from radiodiff.artifacts.vae import build_vae

ROOT = Path(__file__).resolve().parents[1]
PROFILES = {"default": ROOT / "params.yaml", "paper": ROOT / "profiles" / "paper.yaml"}


def networks(params):
    """(name, module, make_inputs(batch)) for each network of a profile."""
    side = params.prepare.resolution
    channels = params.condition.channels
    vae = build_vae(params.vae).eval()
    unet = build_unet(params.ldm, channels).eval()
    baseline = build_baseline(params.baseline, channels).eval()
    latent = side // vae.downsample_factor
    return [
        ("vae encode", lambda x: vae.encode(x).mode(), vae.encoder, lambda b: (torch.rand(b, 1, side, side),)),
        ("vae decode", vae.decode, vae.decoder, lambda b: (torch.randn(b, 3, latent, latent),)),
        ("unet step", unet, unet, lambda b: (torch.randn(b, 3, latent, latent), torch.full((b,), 500),
                                            torch.rand(b, channels, side, side))),
        ("baseline", baseline, baseline, lambda b: (torch.rand(b, channels, side, side),)),
    ]


def gflops(fn, inputs) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn(*inputs)
    return counter.get_total_flops() / 1e9


def ms_per_forward(fn, inputs, repeats: int, bf16: bool) -> float:
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        fn(*inputs)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*inputs)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--batch", type=int, default=32, help="the full batch size (default 32)")
    parser.add_argument("--paper-batch", type=int, default=2,
                        help="full batch for the paper profile (default 2: at 256x256 a CPU forward at batch "
                             "32 takes minutes; the profile is meant for GPU workers)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; ms = median of {args.repeats} forwards, no grad")
    header = f"{'profile':8s} {'network':11s} {'params':>9s} {'GFLOP/fwd':>10s} " \
             f"{'b1 fp32':>9s} {'b1 bf16':>9s} {'batch':>5s} {'bN fp32':>10s} {'bN bf16':>10s}"
    print(header)
    print("-" * len(header))
    for profile in args.profiles:
        params = load_params(PROFILES[profile])
        # The paper profile is GPU-sized: on a CPU, one timed forward per batch size is plenty.
        repeats = args.repeats if profile == "default" else 1
        batch = args.batch if profile == "default" else args.paper_batch
        for name, fn, module, make in networks(params):
            count = sum(p.numel() for p in module.parameters())
            single, full = make(1), make(batch)
            row = [ms_per_forward(fn, single, repeats, False), ms_per_forward(fn, single, repeats, True),
                   ms_per_forward(fn, full, repeats, False), ms_per_forward(fn, full, repeats, True)]
            print(f"{profile:8s} {name:11s} {count / 1e6:8.2f}M {gflops(fn, single):10.2f} "
                  f"{row[0]:9.1f} {row[1]:9.1f} {batch:5d} {row[2]:10.1f} {row[3]:10.1f}", flush=True)


if __name__ == "__main__":
    main()
