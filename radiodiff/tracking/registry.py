"""The evaluated RadioDiff-Flux model in the MLflow Model Registry, as a pyfunc that serves maps.

`FluxPyfunc` wraps `radiodiff.serve.FluxPredictor` (VAE + denoiser + optional tuned tail +
midpoint bank): rows of `buildings` `[256, 256]`, `tx` (row, col) and optional `cars` in, gain
maps `[N, R, R]` float32 in [0, 1] out (R = the model's resolution; gain = RadioMapSeer
gray / 255, exactly what `radiodiff predict` writes to its PNG before rounding to 8 bits).
The inference param `full_resolution` (default false) returns `[N, 256, 256]` on the request's
own grid instead, as `radiodiff predict --full-resolution` writes it.
Requests are checked by `request.parse_request` before any model code runs.

`register_flux_model` logs it in the active run with models-from-code (`flux_model.py`: no
pickled Python object in the model) and registers it. It needs the installed `radiodiff`
package: serve it with `--env-manager local` from this project's venv.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
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
from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema, TensorSpec

from radiodiff.config import SOURCE_MAP_SIZE, FluxConfig
from radiodiff.errors import UserError
from radiodiff.tracking.request import MAX_ROWS, MapRequest, parse_request
from radiodiff.typed_yaml import build, plain

if TYPE_CHECKING:
    from radiodiff.serve import Query

MODEL_NAME = "radiodiff-flux"
LOGGED_NAME = "flux_model"  # the model's folder in the run's artifacts
ENTRY = Path(__file__).with_name("flux_model.py")
SCRATCH_PREFIX = "radiodiff-served-bank-"  # + owner pid: the served bank's private copy
# Pinned to what this venv runs; `radiodiff` brings the rest of its own dependencies.
PINNED = ("radiodiff", "mlflow", "torch", "numpy", "pandas", "pyarrow")


class FluxPyfunc(mlflow.pyfunc.PythonModel):
    """RadioDiff-Flux as an MLflow pyfunc; artifacts `ldm`, `vae` and optional `tail`, `bank`;
    model_config `flux` (FluxConfig as plain data), `resolution`, `max_rows`."""

    def __init__(self) -> None:
        self._predictor = None
        self._max_rows = MAX_ROWS
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._lock = threading.Lock()  # the bank is written on misses: one request at a time

    def load_context(self, context: Any) -> None:
        """Build the predictor from the model's artifacts. The bank is copied to a private
        scratch folder first: misses are added to it, and a model's artifacts stay untouched."""
        from radiodiff.serve import FluxPredictor

        config = context.model_config
        flux = build(FluxConfig, config["flux"], where="model_config.flux")
        artifacts = context.artifacts
        bank_dir = None
        if "bank" in artifacts:
            self._scratch = _scratch_folder()
            bank_dir = Path(self._scratch.name) / "bank"
            shutil.copytree(artifacts["bank"], bank_dir)
        tail = artifacts.get("tail")
        self._predictor = FluxPredictor.from_files(
            ldm_path=Path(artifacts["ldm"]), vae_path=Path(artifacts["vae"]), flux=flux,
            resolution=int(config["resolution"]), tail_path=None if tail is None else Path(tail), bank_dir=bank_dir)
        self._max_rows = int(config["max_rows"])

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
        with self._lock:
            gain, _, _ = self._predictor.predict(queries)
        return at_layout_resolution(gain, queries) if (params or {}).get("full_resolution") else gain

    def _query(self, index: int, request: MapRequest) -> Query:
        """The model-resolution query of one checked map; a Tx it cannot place names the map."""
        if self._predictor is None:
            raise RuntimeError("FluxPyfunc.predict before load_context: load it with mlflow.pyfunc.load_model")
        try:
            return self._predictor.prepare_query(request.buildings, request.tx, request.cars)
        except UserError as exc:
            raise UserError(f"map {index}: {exc}") from None


def _scratch_folder() -> tempfile.TemporaryDirectory:
    """A private temporary folder named after this process, removed when the model is freed.

    uvicorn ends `mlflow models serve` by re-raising SIGTERM, which skips that cleanup: so the
    folders of processes that no longer exist are removed here first.
    """
    for old in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        owner = old.name.removeprefix(SCRATCH_PREFIX).split("-")[0]
        if owner.isdigit() and not _process_exists(int(owner)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def flux_signature() -> ModelSignature:
    """Inputs as columns (one row per map), the output as a tensor `[N, side, side]` float32
    (side R, or 256 with the boolean param `full_resolution`).

    Columns, not tensors, for the inputs: a TensorSpec cannot be optional (cars) and would make
    Python callers match its dtype exactly. Array columns do not carry the 256 x 256 shape:
    `parse_request` checks it, and the values, with a message naming the map.
    """
    grid = Array(Array(DataType.double))
    inputs = Schema([ColSpec(grid, "buildings"), ColSpec(Array(DataType.long), "tx"),
                     ColSpec(grid, "cars", required=False)])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1), "gain")])
    params = ParamSchema([ParamSpec("full_resolution", DataType.boolean, False)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


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


def register_flux_model(*, ldm_path: Path, vae_path: Path, flux: FluxConfig, resolution: int,
                        tail_path: Path | None = None, bank_dir: Path | None = None, name: str = MODEL_NAME,
                        tags: Mapping[str, Any] | None = None, max_rows: int = MAX_ROWS) -> int:
    """Log `FluxPyfunc` in the active run and register it as a new version of `name`.

    The version is tagged with `model_hash` (the denoiser file's digest, which names its VAE's;
    the bank's key), `tail` (used or not) and `tags` (e.g. evaluate metrics). Returns the version.
    MLflow runs the input example through the model once while logging: a smoke test for free.
    """
    from radiodiff.artifacts.keys import model_hash

    if mlflow.active_run() is None:
        raise RuntimeError("register_flux_model needs an active MLflow run (open one with tracking.stage_run)")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    artifacts = _artifacts(Path(ldm_path), Path(vae_path), tail_path if flux.use_tuned_tail else None, bank_dir)
    info = mlflow.pyfunc.log_model(
        name=LOGGED_NAME, python_model=str(ENTRY), artifacts=artifacts,
        model_config={"flux": plain(flux), "resolution": int(resolution), "max_rows": int(max_rows)},
        signature=flux_signature(), input_example=example_request(),
        pip_requirements=pinned_requirements(), registered_model_name=name)
    version = int(info.registered_model_version)
    version_tags = {"model_hash": model_hash(Path(ldm_path)), "tail": str("tail" in artifacts).lower(),
                    "bank": str("bank" in artifacts).lower(), "resolution": str(resolution)}
    version_tags.update({key: _tag_text(value) for key, value in (tags or {}).items()})
    client = mlflow.MlflowClient()
    for key, value in version_tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    return version


def _tag_text(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
