"""DVC stage `train_ldm_alt`: the denoiser of `ldm` on the other objective (`ldm_alt`), so
`evaluate` compares both objectives and their samplers on the same maps."""

from __future__ import annotations

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import Launch, rank_flow, stage_main
from pipelines.train_ldm import train_ldm_flow

from radiodiff.artifacts.layout import MODELS


def _alt_config(params):
    return params.ldm_alt.derive(params.ldm)


LAUNCH = Launch(module="pipelines.train_ldm_alt", section="ldm.train", loop=lambda params: _alt_config(params).train)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, __doc__, lambda params: rank_flow(train_ldm_flow)(
        _alt_config(params), params.condition, model_path=str(MODELS.ldm_alt), stage="train_ldm_alt"), LAUNCH)


if __name__ == "__main__":
    raise SystemExit(main())
