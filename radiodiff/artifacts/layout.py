"""Where the pipeline reads and writes, relative to the project root: named once, here.

dvc.yaml spells the same paths (a test reads both); stage entry points, `radiodiff predict`
and the registry take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATASET_DIR = Path("data/prepared")  # prepare's shards and Parquet index
PREPARE_CACHE_DIR = Path("data/cache/prepare")  # per-map shards of a resumable prepare
RUNS_DIR = Path("data/cache/runs")  # resumable training checkpoints (outside DVC's outs)
TUNE_DIR = Path("data/cache/tune")  # Optuna trial checkpoints, removed after each trial
BANK_DIR = Path("bank")  # the midpoint bank (Parquet parts)
BANK_WORK_DIR = Path("data/cache/bank")  # build_bank's resumable work area (outside DVC's outs)
METRICS_DIR = Path("metrics")  # DVC metrics, one JSON per stage
PLOTS_DIR = Path("plots")  # DVC plots: figures and plot data
CURVES_DIR = PLOTS_DIR / "curves"  # training curves, one folder per training stage
REPORT_FILE = Path("docs/RESULTS.md")  # the report stage's Markdown of a run's results


@dataclass(frozen=True)
class ModelFiles:
    """The trained model files of one pipeline run, in `folder`."""

    folder: Path = Path("models")

    @property
    def vae(self) -> Path:
        return self.folder / "vae.pt"

    @property
    def ldm(self) -> Path:
        """The served denoiser (params `ldm`)."""
        return self.folder / "ldm.pt"

    @property
    def alternatives(self) -> Path:
        """The folder of the same denoiser on the other objectives (params `ldm_alt`)."""
        return self.folder / "alt"

    def alternative(self, prediction: str) -> Path:
        """The denoiser trained on objective `prediction` (kc, flow, ...: params `ldm_alt`)."""
        return self.alternatives / f"{prediction}.pt"

    @property
    def baseline(self) -> Path:
        return self.folder / "baseline.pt"

    @property
    def flux_tail(self) -> Path:
        """The denoiser fine-tuned on the Flux tail."""
        return self.folder / "flux_tail.pt"

    @property
    def few_steps(self) -> Path:
        """The folder of each objective's denoiser fine-tuned on its own few-step sampler."""
        return self.folder / "few_step"

    def few_step(self, prediction: str) -> Path:
        """The `prediction` objective's (v, kc, flow) denoiser fine-tuned on its few-step sampler."""
        return self.few_steps / f"{prediction}.pt"

    def served(self) -> ModelFiles:
        """These files, checked to hold what serving needs (denoiser and VAE): a UserError
        saying how to make them otherwise."""
        from radiodiff.errors import UserError

        for path in (self.ldm, self.vae):
            if not path.is_file():
                raise UserError(f"model file not found: {path} (run `dvc repro` first to train the models)")
        return self

    def all(self) -> dict[str, Path]:
        """Every model file and folder by name."""
        names = ("vae", "ldm", "alternatives", "baseline", "flux_tail", "few_steps")
        return {name: getattr(self, name) for name in names}


MODELS = ModelFiles()


def metrics_file(stage: str) -> Path:
    """A stage's DVC metrics file."""
    return METRICS_DIR / f"{stage}.json"
