"""Where a one-call map's error comes from: the VAE's reconstruction floor, and the latent's own.

    .venv/bin/python benchmarks/error_split.py [--project .] [--params params.yaml] [--out split.json]

Run after a pipeline run (`make demo`). On every test map, for each of params' `flux.seeds`:

- the VAE's reconstruction of the truth, decode(encode(map)): the map a perfect latent gives;
- the served plan (the fine-tuned tail from the static midpoint at `flux.t_mid`, one call), the
  denoiser's one call from noise (DDIM-1) and the same with the tail's fine-tuning
  (tune_few_step's v model), each scored against the truth ("NMSE") and against that
  reconstruction ("vs recon.": the error a perfect decoder would leave, the latent's own);
- the supervised baseline, for scale, against both.

Both NMSEs divide by the truth's energy, so for each row NMSE = vs recon. + the reconstruction's
NMSE + the cross term (twice the inner product of the two errors over the energy), whose mean is
the last column. Means over maps, then over seeds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from radiodiff.artifacts.baseline import load_baseline, predict_baseline
from radiodiff.artifacts.denoiser import load_few_step, load_ldm, load_tail
from radiodiff.artifacts.layout import DATASET_DIR, MODELS
from radiodiff.config import load_params
from radiodiff.data.dataset import RadioMapDataset
from radiodiff.evaluation.scenarios import load_rows
from radiodiff.flux import flux_plan, full_plan, stage2_decode

from _after_run import after_run_parser  # this folder's helper: benchmarks run by path
from tail_loss import start_latents


def split(pred: torch.Tensor, recon: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean over maps `[N, 1, H, W]` of each squared error over the truth's energy: against the
    truth, against the reconstruction, and the cross term that makes the first the sum."""
    energy = truth.flatten(1).pow(2).sum(dim=1).clamp_min(1e-12)
    to_recon, recon_error = (pred - recon).flatten(1), (recon - truth).flatten(1)
    return {"nmse": float(((pred - truth).flatten(1).pow(2).sum(dim=1) / energy).mean()),
            "vs_recon": float((to_recon.pow(2).sum(dim=1) / energy).mean()),
            "cross": float((2 * (to_recon * recon_error).sum(dim=1) / energy).mean())}


def main(argv: list[str] | None = None) -> int:
    args = after_run_parser(__doc__).parse_args(argv)
    project = args.project.resolve()
    needed = [project / path for path in (MODELS.ldm, MODELS.vae, MODELS.flux_tail, MODELS.few_step("v"),
                                          MODELS.baseline)]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing or not (project / DATASET_DIR).is_dir():
        print(f"error: {project} lacks {', '.join(missing) or DATASET_DIR}: run `make demo` first", file=sys.stderr)
        return 2
    params = load_params(args.params or project / "params.yaml")
    cfg = params.flux
    model = load_ldm(project / MODELS.ldm, project / MODELS.vae)[0]
    tail = load_tail(project / MODELS.flux_tail, project / MODELS.ldm, model)
    tuned = load_few_step(project / MODELS.few_step("v"), project / MODELS.ldm, model)
    baseline = load_baseline(project / MODELS.baseline)[0].eval()
    test = RadioMapDataset(project / DATASET_DIR, "test", params.condition.encodings)
    rows = load_rows(test, list(range(len(test))))
    with torch.no_grad():
        recon = model.decode(model.encode(rows.gain), rows.cond[:, 0])
        baseline_maps = predict_baseline(baseline, rows.cond)
    served_plan = flux_plan(model.process, cfg.t_mid, cfg.prefix_steps, cfg.tail_steps)
    one_call = full_plan(model.process, 1)
    methods = {f"served Flux (t_mid {cfg.t_mid})": (tail, served_plan, True),
               "DDIM-1": (model.unet, one_call, False), "DDIM-1 tuned": (tuned, one_call, False)}
    floor = split(recon, rows.gain, rows.gain)["vs_recon"]
    table = []
    for name, (net, plan, from_bank) in methods.items():
        print(f"error_split: {name}", file=sys.stderr, flush=True)
        seeds = []
        for seed in cfg.seeds:
            start = start_latents(model, cfg, rows.cond, rows.maps, seed, from_bank)
            with torch.no_grad():
                pred = stage2_decode(model, start, rows.cond, plan,
                                     denoise_fn=lambda x, t, net=net: net(x, t, rows.cond.to(model.device))).cpu()
            seeds.append(split(pred, recon, rows.gain))
        table.append({"method": name, **{key: sum(s[key] for s in seeds) / len(seeds) for key in seeds[0]}})
    table.append({"method": "baseline", **split(baseline_maps, recon, rows.gain)})
    print(f"{len(test)} test maps x seeds {list(cfg.seeds)}; the VAE reconstruction's own NMSE (the floor): {floor:.4f}")
    print(f"{'method':<24} {'NMSE':>7} {'vs recon.':>9} {'floor':>7} {'cross':>7}")
    for row in table:
        print(f"{row['method']:<24} {row['nmse']:>7.4f} {row['vs_recon']:>9.4f} {floor:>7.4f} {row['cross']:>7.4f}")
    if args.out:
        args.out.write_text(json.dumps({"floor": floor, "rows": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
