"""DVC stage `train_ldm_alt`: the denoiser of `ldm` once more on each other objective
(`ldm_alt.predictions`: kc, flow), so `evaluate` compares every objective and its sampler on
the same maps. Models in `models/alt/{objective}.pt`, metrics of all in one file."""

from __future__ import annotations

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import Launch, rank_flow, stage_main, write_metrics
from pipelines.train_ldm import train_ldm_flow

from radiodiff.artifacts.layout import MODELS
from radiodiff.training import distributed

STAGE = "train_ldm_alt"
# Every alternative trains with ldm's loop settings (devices included), so the launch reads ldm.train.
LAUNCH = Launch(module="pipelines.train_ldm_alt", section="ldm.train", loop=lambda params: params.ldm.train)


def train_alternatives(params) -> dict:
    """Train each alternative objective in params order; their metrics by objective name."""
    metrics = {}
    for prediction, cfg in params.ldm_alt.derive(params.ldm).items():
        name = prediction.value
        metrics[name] = rank_flow(train_ldm_flow)(cfg, params.condition, model_path=str(MODELS.alternative(name)),
                                                  stage=STAGE, objective=name)
    if distributed.is_main():
        write_metrics(STAGE, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, train_alternatives, LAUNCH)


if __name__ == "__main__":
    raise SystemExit(main())
