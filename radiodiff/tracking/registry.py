"""The evaluated RadioDiff-Flux model in the MLflow Model Registry, as a pyfunc that serves maps.

`FluxPyfunc` wraps `radiodiff.serve.FluxPredictor` (VAE + denoiser + optional tuned tail +
midpoint bank): rows of `buildings` `[256, 256]`, `tx` (row, col) and optional `cars` in, gain
maps `[N, R, R]` float32 in [0, 1] out (R = the model's resolution; gain = RadioMapSeer
gray / 255, exactly what `radiodiff predict` writes to its PNG before rounding to 8 bits).
The inference param `full_resolution` (default false) returns `[N, 256, 256]` on the request's
own grid instead, as `radiodiff predict --full-resolution` writes it.
Requests are checked by `request.parse_request` before any model code runs; the signature
declares no input schema, so that MLflow's own column casts (which refused 0/255 integers,
booleans and a null `cars`) do not stand between a request and that one check.
Concurrent requests share forward passes (`radiodiff.dynamic_batching`), at most
`batch_maps` maps per pass (model_config; `mlflow.pyfunc.load_model(uri, model_config=...)`
overrides it, 1 serves requests one at a time).

`register_flux_model` logs it in the active run with models-from-code (`flux_model.py`: no
pickled Python object in the model) and registers it; `save_flux_model` writes the same model
to a folder. The model carries the `radiodiff` package as its code (`code_paths`) and pins
the third-party packages that code imports to the versions installed here, so it loads in a
fresh environment without this checkout (`mlflow models serve --env-manager virtualenv`, or
`local` from this project's venv).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import DataType, ParamSchema, ParamSpec, Schema, TensorSpec

from radiodiff.config import SOURCE_MAP_SIZE, FluxConfig
from radiodiff.dynamic_batching import DynamicBatcher
from radiodiff.errors import UserError
from radiodiff.io import process_alive
from radiodiff.tracking.request import MAX_ROWS, MapRequest, parse_request
from radiodiff.typed_yaml import build, plain

if TYPE_CHECKING:
    from radiodiff.serve import Query

MODEL_NAME = "radiodiff-flux"
CHAMPION = "champion"  # the registry alias of the version to serve (`models:/radiodiff-flux@champion`)
TIE = 0.01  # a version within 1% of the champion's NMSE ties it, and a tie promotes the newer
LOGGED_NAME = "flux_model"  # the model's folder in the run's artifacts
ENTRY = Path(__file__).with_name("flux_model.py")
SCRATCH_PREFIX = "radiodiff-served-bank-"  # + owner pid: where the served model stores its bank misses
DEFAULT_BATCH_MAPS = 64  # maps per shared forward pass: ~0.4 s of stage 2 at 64x64 on 2 CPU cores
# The distributions the serving code imports (radiodiff.serve, radiodiff.tracking.registry and
# their imports), pinned to what this venv runs; radiodiff itself travels as the model's code.
PINNED = ("mlflow", "torch", "numpy", "scipy", "pandas", "pyarrow", "PyYAML")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # radiodiff/


class FluxPyfunc(mlflow.pyfunc.PythonModel):
    """RadioDiff-Flux as an MLflow pyfunc; artifacts `ldm`, `vae` and optional `tail`, `bank`;
    model_config `flux` (FluxConfig as plain data), `resolution`, `max_rows`, `batch_maps`."""

    def __init__(self) -> None:
        self._predictor = None
        self._max_rows = MAX_ROWS
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._batcher: DynamicBatcher | None = None

    def load_context(self, context: Any) -> None:
        """Build the predictor from the model's artifacts. The logged bank is only read:
        midpoints of new layouts go to a serving bank in a private scratch folder (see
        `radiodiff.bank.serving`), so a model's artifacts never change and nothing is copied."""
        from radiodiff.serve import FluxPredictor

        config = context.model_config
        flux = build(FluxConfig, config["flux"], where="model_config.flux")
        batch_maps = int(config.get("batch_maps", DEFAULT_BATCH_MAPS))
        if batch_maps < 1:
            raise ValueError(f"model_config batch_maps must be >= 1, got {batch_maps}")
        artifacts = context.artifacts
        bank_dir = serving_dir = None
        if "bank" in artifacts:
            self._scratch = _scratch_folder()
            bank_dir, serving_dir = Path(artifacts["bank"]), Path(self._scratch.name) / "bank-serving"
        tail = artifacts.get("tail")
        self._predictor = FluxPredictor.from_files(
            ldm_path=Path(artifacts["ldm"]), vae_path=Path(artifacts["vae"]), flux=flux,
            resolution=int(config["resolution"]), tail_path=None if tail is None else Path(tail), bank_dir=bank_dir,
            serving_bank_dir=serving_dir)
        self._max_rows = int(config["max_rows"])
        self._batcher = DynamicBatcher(self._predict_maps, max_items=batch_maps)

    def close(self) -> None:
        """Remove the scratch folder of the served bank's misses (a server calls it on exit)."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    @property
    def batching(self) -> dict[str, int]:
        """Requests answered and forward passes run so far (requests / passes = sharing)."""
        batcher = self._batcher
        return {"requests": 0, "batches": 0} if batcher is None else {"requests": batcher.requests,
                                                                      "batches": batcher.batches}

    # MLflow's column schema hands over a DataFrame; a DataFrame hint also tells MLflow not to
    # derive a second signature from the hint.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        """Gain maps `[N, R, R]` float32 in [0, 1] of the request's N maps (see `request.py`);
        `[N, 256, 256]` with params `{"full_resolution": true}`. A bad request is an
        MlflowException (HTTP 400 when served) naming the map and field."""
        from radiodiff.serve import at_layout_resolution

        try:
            queries = [self._query(i, m) for i, m in enumerate(parse_request(model_input, max_rows=self._max_rows))]
        except UserError as exc:
            raise MlflowException(f"bad request: {exc}", error_code=INVALID_PARAMETER_VALUE) from None
        gain = np.stack(self._batcher.submit(queries))
        return at_layout_resolution(gain, queries) if (params or {}).get("full_resolution") else gain

    def _predict_maps(self, queries: list[Query]) -> list[np.ndarray]:
        """One forward pass over the queries of every request in a batch: a map `[R, R]` each."""
        gain, _, _ = self._predictor.predict(queries)
        return list(gain)

    def _query(self, index: int, request: MapRequest) -> Query:
        """The model-resolution query of one checked map; a Tx it cannot place names the map."""
        if self._predictor is None:
            raise RuntimeError("FluxPyfunc.predict before load_context: load it with mlflow.pyfunc.load_model")
        try:
            return self._predictor.prepare_query(request.buildings, request.tx, request.cars)
        except UserError as exc:
            raise UserError(f"map {index}: {exc}") from None


def _scratch_folder() -> tempfile.TemporaryDirectory:
    """A private temporary folder named after this process, removed by `FluxPyfunc.close`
    (`radiodiff serve` calls it on SIGTERM and Ctrl-C) or when the model is freed.

    uvicorn ends `mlflow models serve` by re-raising SIGTERM, which skips that cleanup: so the
    folders of processes that no longer exist are removed here first.
    """
    for old in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        owner = old.name.removeprefix(SCRATCH_PREFIX).split("-")[0]
        if owner.isdigit() and not process_alive(int(owner)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")


def flux_signature() -> ModelSignature:
    """The output as a tensor `[N, side, side]` float32 (side R, or 256 with the boolean param
    `full_resolution`); no input schema.

    The request contract lives in one place, `request.py`, which checks every field with a
    message naming the map. An MLflow column schema would check first and worse: Array(double)
    columns refused 0/255 integer and boolean layouts, and `"cars": null` under `inputs`
    failed inside MLflow with "len() of unsized object".
    """
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1), "gain")])
    params = ParamSchema([ParamSpec("full_resolution", DataType.boolean, False)])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def example_request() -> dict[str, Any]:
    """One map as MLflow's input example: four 64 m blocks on a street grid, the Tx in a street."""
    buildings = np.zeros((SOURCE_MAP_SIZE, SOURCE_MAP_SIZE), dtype=np.int64)
    for r0 in (48, 144):
        for c0 in (48, 144):
            buildings[r0:r0 + 64, c0:c0 + 64] = 1
    return {"buildings": buildings.tolist(), "tx": [128, 30]}


def pinned_requirements() -> list[str]:
    """Exact pins of the serving stack as installed here (no inference: it is slow and offline)."""
    return [f"{name}=={installed_version(name).split('+')[0]}" for name in PINNED]


def _artifacts(ldm_path: Path, vae_path: Path, tail_path: Path | None, bank_dir: Path | None) -> dict[str, str]:
    """The model files to copy into the logged model: the tail and bank only when present."""
    for path in (ldm_path, vae_path):
        if not Path(path).is_file():
            raise UserError(f"model file not found: {path}")
    artifacts = {"ldm": str(ldm_path), "vae": str(vae_path)}
    if tail_path is not None and Path(tail_path).is_file():
        artifacts["tail"] = str(tail_path)
    if bank_dir is not None and Path(bank_dir).is_dir():
        artifacts["bank"] = str(bank_dir)
    return artifacts


def _model_spec(*, ldm_path: Path, vae_path: Path, flux: FluxConfig, resolution: int, tail_path: Path | None,
                bank_dir: Path | None, max_rows: int, batch_maps: int) -> dict[str, Any]:
    """The arguments `log_model` and `save_model` share: code, artifacts, config, signature."""
    if max_rows < 1 or batch_maps < 1:
        raise ValueError(f"max_rows and batch_maps must be >= 1, got {max_rows} and {batch_maps}")
    artifacts = _artifacts(Path(ldm_path), Path(vae_path), tail_path if flux.use_tuned_tail else None, bank_dir)
    return {"python_model": str(ENTRY), "artifacts": artifacts, "code_paths": [str(PACKAGE_DIR)],
            "model_config": {"flux": plain(flux), "resolution": int(resolution), "max_rows": int(max_rows),
                             "batch_maps": int(batch_maps)},
            "signature": flux_signature(), "input_example": example_request(),
            "pip_requirements": pinned_requirements()}


def save_flux_model(path: Path, *, ldm_path: Path, vae_path: Path, flux: FluxConfig, resolution: int,
                    tail_path: Path | None = None, bank_dir: Path | None = None, max_rows: int = MAX_ROWS,
                    batch_maps: int = DEFAULT_BATCH_MAPS) -> Path:
    """Write the model `register_flux_model` logs to folder `path` (which must not exist), for
    `mlflow.pyfunc.load_model(path)` or `radiodiff serve --model path`, with no tracking store."""
    spec = _model_spec(ldm_path=ldm_path, vae_path=vae_path, flux=flux, resolution=resolution, tail_path=tail_path,
                       bank_dir=bank_dir, max_rows=max_rows, batch_maps=batch_maps)
    mlflow.pyfunc.save_model(path=str(path), **spec)
    return Path(path)


def register_flux_model(*, ldm_path: Path, vae_path: Path, flux: FluxConfig, resolution: int,
                        tail_path: Path | None = None, bank_dir: Path | None = None, name: str = MODEL_NAME,
                        tags: Mapping[str, Any] | None = None, max_rows: int = MAX_ROWS,
                        batch_maps: int = DEFAULT_BATCH_MAPS) -> int:
    """Log `FluxPyfunc` in the active run and register it as a new version of `name`.

    The version is tagged with `model_hash` (the denoiser file's digest, which names its VAE's;
    the bank's key), `tail` (used or not) and `tags` (e.g. evaluate metrics). Returns the version.
    MLflow runs the input example through the model once while logging: a smoke test for free.
    """
    from radiodiff.artifacts.keys import model_hash

    if mlflow.active_run() is None:
        raise RuntimeError("register_flux_model needs an active MLflow run (open one with tracking.stage_run)")
    spec = _model_spec(ldm_path=ldm_path, vae_path=vae_path, flux=flux, resolution=resolution, tail_path=tail_path,
                       bank_dir=bank_dir, max_rows=max_rows, batch_maps=batch_maps)
    info = mlflow.pyfunc.log_model(name=LOGGED_NAME, registered_model_name=name, **spec)
    version = int(info.registered_model_version)
    artifacts = spec["artifacts"]
    version_tags = {"model_hash": model_hash(Path(ldm_path)), "tail": str("tail" in artifacts).lower(),
                    "bank": str("bank" in artifacts).lower(), "resolution": str(resolution)}
    version_tags.update({key: _tag_text(value) for key, value in (tags or {}).items()})
    client = mlflow.MlflowClient()
    for key, value in version_tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    return version


def promote_champion(version: int, *, nmse: float, gate: bool, why_not: str = "", name: str = MODEL_NAME
                     ) -> tuple[bool, str]:
    """Point the alias `champion` at `version` when it passes its `gate` (evaluate: Flux counts)
    and its served NMSE beats or ties (within `TIE`) the current champion's `flux_nmse` tag.
    Returns (promoted, the reason in words); the version is tagged with that reason."""
    client = mlflow.MlflowClient()
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    if not gate:
        promoted, reason = False, f"not promoted: {why_not or 'it did not pass its gate'}"
    elif current is not None and not nmse <= float(current.tags.get("flux_nmse", "inf")) * (1.0 + TIE):
        promoted, reason = False, (f"not promoted: NMSE {nmse:.4g} is worse than champion version {current.version}'s "
                                   f"{float(current.tags['flux_nmse']):.4g}")
    else:
        previous = "" if current is None else f" (was version {current.version})"
        client.set_registered_model_alias(name, CHAMPION, str(version))
        promoted, reason = True, f"promoted to @{CHAMPION}{previous}: NMSE {nmse:.4g}"
    client.set_model_version_tag(name, str(version), "champion_decision", reason)
    return promoted, reason


def _tag_text(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
