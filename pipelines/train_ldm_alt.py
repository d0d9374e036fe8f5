"""DVC stage `train_ldm_alt`: the denoiser of `ldm` on the other objective (`ldm_alt`), so
`evaluate` compares both objectives and their samplers on the same maps."""

from __future__ import annotations

# _stage first: it sets the offline/quiet switches that Prefect reads at import.
from pipelines._stage import MODELS_DIR, stage_main
from pipelines.train_ldm import ldm_launch, train_ldm_flow

ALT_MODEL = MODELS_DIR / "ldm_alt.pt"


def main(argv: list[str] | None = None) -> int:
    def alt_config(params):
        return params.ldm_alt.derive(params.ldm)

    return stage_main(argv, __doc__, lambda params: train_ldm_flow(
        alt_config(params), params.condition, model_path=str(ALT_MODEL), stage="train_ldm_alt"),
        ldm_launch("pipelines.train_ldm_alt", alt_config))


if __name__ == "__main__":
    raise SystemExit(main())
