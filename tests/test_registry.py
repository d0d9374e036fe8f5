"""The registered RadioDiff-Flux pyfunc: request checks, the guard in front of it, dynamic
batching, and `radiodiff serve` answering like `radiodiff predict` on the same input (toy
models of conftest, a small bank, a tuned tail), under concurrent clients and SIGTERM."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.exceptions import MlflowException
from PIL import Image

from radiodiff.config import FluxConfig
from radiodiff.data.resample import upsample_gain
from radiodiff.errors import UserError
from radiodiff.tracking.registry import FluxPyfunc
from radiodiff.tracking.request import parse_request

SIDE = 256
FLUX = FluxConfig(t_mids=(30,), t_mid=30, prefix_steps=2, tail_steps=2, seeds=(0,), use_tuned_tail=True)
RES = 32  # the conftest dataset's resolution
MAX_ROWS = 2  # small, so the row limit is cheap to hit over HTTP


def _blocks() -> np.ndarray:
    buildings = np.zeros((SIDE, SIDE), dtype=np.uint8)
    buildings[48:112, 48:112] = 1
    return buildings


def _rejects(model_input, match: str, max_rows: int = 16) -> None:
    with pytest.raises(UserError, match=match):
        parse_request(model_input, max_rows=max_rows)


def test_parse_request_accepts_a_map_a_dataframe_and_a_batch():
    (one,) = parse_request({"buildings": _blocks(), "tx": [10, 20]})
    assert one.tx == (10, 20) and one.cars is None and one.buildings.dtype == bool and one.buildings[50, 50]
    cars = np.zeros((SIDE, SIDE))
    cars[0:4, 0:8] = 1
    frame = pd.DataFrame({"buildings": [_blocks().tolist(), _blocks()], "tx": [[1, 2], np.array([3, 4])],
                          "cars": [None, cars], "note": ["ignored", "too"]})
    first, second = parse_request(frame)
    assert first.cars is None and second.cars[2, 3] and second.tx == (3, 4)
    batch = parse_request({"buildings": np.stack([_blocks()] * 3), "tx": np.array([[1, 2], [3, 4], [5, 6]])})
    assert [m.tx for m in batch] == [(1, 2), (3, 4), (5, 6)]
    assert parse_request({"buildings": _blocks(), "tx": [1.0, 2.0], "cars": float("nan")})[0].cars is None


@pytest.mark.parametrize("model_input, match", [
    ({"buildings": _blocks()[:128, :128], "tx": [1, 2]},
     r"map 0: buildings: layout has shape \(128, 128\), expected 256x256"),
    ({"buildings": _blocks()[None, None], "tx": [1, 2]}, "expected 256x256"),
    ({"buildings": np.where(_blocks() > 0, np.nan, 0.0), "tx": [1, 2]}, "finite numbers"),
    ({"buildings": _blocks() * 0.5, "tx": [1, 2]}, "not binary"),
    ({"buildings": _blocks(), "tx": [1, 2], "cars": np.ones((SIDE, 8))}, "map 0: cars: layout has shape"),
    ({"buildings": _blocks(), "tx": [1.5, 2]}, "whole pixel numbers"),
    ({"buildings": _blocks(), "tx": [np.nan, 2]}, "whole pixel numbers"),
    ({"buildings": _blocks(), "tx": [1, 2, 3]}, r"two numbers \(row, col\)"),
    ({"buildings": _blocks(), "tx": [1e40, 2]}, "outside the 256x256 map"),
    ({"buildings": [["a"] * SIDE] * SIDE, "tx": [1, 2]}, "expected numbers"),
    ({"buildings": [[0, 1], [0]], "tx": [1, 2]}, "not a rectangular array"),
    ({"buildings": _blocks()}, "lacks field.*tx"),
    ({"buildings": np.stack([_blocks()] * 2), "tx": [[1, 2]] * 3}, r"a batch needs .* tx \(3, 2\)"),
    (pd.DataFrame({"buildings": [], "tx": []}), "holds no map"),
    ([_blocks()], "expected a pandas DataFrame or a dict"),
], ids=["small", "4-d", "nan", "non-binary", "cars-shape", "tx-fraction", "tx-nan", "tx-three", "tx-huge",
        "strings", "ragged", "no-tx", "batch-mismatch", "empty", "list"])
def test_parse_request_refuses_bad_requests_with_one_clear_line(model_input, match):
    _rejects(model_input, match)


def test_the_row_limit_is_checked_before_any_map():
    garbage = pd.DataFrame({"buildings": ["x", "y", "z"], "tx": [None] * 3})
    _rejects(garbage, "holds 3 maps; at most 2 per request", max_rows=2)


def test_an_unloaded_model_still_refuses_a_bad_request_as_an_mlflow_error():
    # The check runs before the predictor is touched: a clear 400, not a crash in torch.
    with pytest.raises(MlflowException, match="bad request: map 0: buildings"):
        FluxPyfunc().predict(None, {"buildings": np.zeros((64, 64)), "tx": [1, 2]})


def test_scratch_folders_of_exited_processes_are_removed(tmp_path, monkeypatch):
    from radiodiff.tracking.registry import SCRATCH_PREFIX, _scratch_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                            check=True)
    dead = tmp_path / f"{SCRATCH_PREFIX}{int(exited.stdout)}-x"
    live = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-y"
    for folder in (dead, live):
        (folder / "bank").mkdir(parents=True)
    scratch = _scratch_folder()
    assert not dead.exists() and live.exists()
    assert Path(scratch.name).parent == tmp_path
    assert Path(scratch.name).name.startswith(f"{SCRATCH_PREFIX}{os.getpid()}-")
    scratch.cleanup()


# ---- the registered model, served over HTTP ----------------------------------------------------

@pytest.fixture(scope="module")
def served_files(dataset, vae_file, ldm_file, tmp_path_factory):
    """A models folder (ldm, vae, a jittered tail), a bank of the dataset's scenes and a params file."""
    from radiodiff.artifacts.denoiser import load_ldm, save_tail
    from radiodiff.stages.bank import fill_bank, load_scenes

    root = tmp_path_factory.mktemp("registry")
    models = root / "models"
    models.mkdir()
    for name in ("ldm.pt", "vae.pt"):
        shutil.copy2(dataset / "models" / name, models / name)
    model, _, condition = load_ldm(models / "ldm.pt", models / "vae.pt")
    tail = copy.deepcopy(model.unet)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a 4-step toy denoiser barely sees the Tx: a jittered tail makes maps differ
        for param in tail.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    save_tail(models / "flux_tail.pt", tail, FLUX, models / "ldm.pt")
    scenes = load_scenes(dataset / "data", ["train", "test"])
    assert fill_bank(model, models / "ldm.pt", root / "bank", scenes, FLUX, condition.channels) == len(scenes.ids)
    params = {"prepare": {"resolution": RES},
              "flux": {"t_mids": [30], "t_mid": 30, "prefix_steps": 2, "tail_steps": 2, "seeds": [0]}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, scenes.buildings[-1]


@pytest.fixture(scope="module")
def saved_model(served_files, tmp_path_factory):
    """The registered model's folder (save_flux_model: no tracking store), loaded once, and a
    layout of its bank at 1 m with two free Tx pixels."""
    import mlflow

    from radiodiff.tracking.registry import save_flux_model

    files, scene = served_files
    folder = save_flux_model(tmp_path_factory.mktemp("saved") / "model", ldm_path=files / "models" / "ldm.pt",
                             vae_path=files / "models" / "vae.pt", flux=FLUX, resolution=RES,
                             tail_path=files / "models" / "flux_tail.pt", bank_dir=files / "bank",
                             max_rows=MAX_ROWS)
    model = mlflow.pyfunc.load_model(str(folder))
    buildings = np.kron(scene, np.ones((SIDE // RES, SIDE // RES), dtype=bool))
    free = np.argwhere(~scene)
    txs = [tuple(int(v) * (SIDE // RES) + 4 for v in free[0]), tuple(int(v) * (SIDE // RES) + 4 for v in free[-1])]
    yield folder, model, buildings, txs
    model.unwrap_python_model().close()


def _client(model, max_body_bytes: int = 16_000_000):
    from starlette.testclient import TestClient

    from radiodiff.tracking.server import guarded_app

    return TestClient(guarded_app(model, max_body_bytes=max_body_bytes))


def test_every_documented_request_form_is_served_alike(saved_model):
    """The README's request (0/1 integers under `inputs`), 0/255 integers, booleans, floats,
    `cars: null` under `inputs` and in records, a dataframe_split and an `inputs` batch: one map."""
    from radiodiff.tracking.registry import example_request

    _, model, buildings, txs = saved_model
    tx = list(txs[0])
    ones = buildings.astype(int).tolist()
    forms = {
        "inputs, 0/1 integers": {"inputs": {"buildings": ones, "tx": tx}},
        "inputs, cars null": {"inputs": {"buildings": ones, "tx": tx, "cars": None}},
        "records, 0/255 integers": {"dataframe_records": [{"buildings": (buildings * 255).astype(int).tolist(),
                                                           "tx": tx}]},
        "records, booleans, cars null": {"dataframe_records": [{"buildings": buildings.tolist(), "tx": tx,
                                                                "cars": None}]},
        "records, floats": {"dataframe_records": [{"buildings": buildings.astype(float).tolist(), "tx": tx}]},
        "split": {"dataframe_split": {"columns": ["buildings", "tx"], "data": [[ones, tx]]}},
    }
    client = _client(model)
    expected = model.predict({"buildings": buildings, "tx": tx})  # a Python caller's bool array
    assert expected.shape == (1, RES, RES)
    for name, payload in forms.items():
        response = client.post("/invocations", json=payload)
        assert response.status_code == 200, (name, response.text[:300])
        assert np.allclose(np.asarray(response.json()["predictions"]), expected, atol=1e-6), name
    batch = client.post("/invocations", json={"inputs": {"buildings": [ones, ones], "tx": [tx, list(txs[1])]}})
    assert batch.status_code == 200 and np.asarray(batch.json()["predictions"]).shape == (2, RES, RES)
    readme = client.post("/invocations", json={"inputs": example_request()})  # the README's own request
    assert readme.status_code == 200, readme.text[:300]


def test_the_saved_model_loads_its_own_code_without_this_checkout(saved_model, tmp_path):
    """With the checkout's radiodiff made unimportable, the model runs on the copy it carries."""
    folder, _, buildings, txs = saved_model
    np.save(tmp_path / "buildings.npy", buildings)
    script = f"""
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "").lower()]
sys.path = [p for p in sys.path if p not in ("", {str(Path.cwd())!r}, {str(Path(__file__).resolve().parents[1])!r})]
try:
    import radiodiff
    raise SystemExit("the checkout's radiodiff is still importable")
except ImportError:
    pass
import numpy as np, mlflow
model = mlflow.pyfunc.load_model({str(folder)!r})
import radiodiff
assert radiodiff.__file__.startswith({str(folder)!r}), radiodiff.__file__
gain = model.predict({{"buildings": np.load("buildings.npy"), "tx": {list(txs[0])!r}}})
print("shape", gain.shape)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS="1"))
    assert done.returncode == 0 and f"shape (1, {RES}, {RES})" in done.stdout, done.stderr[-2000:]
    requirements = (folder / "requirements.txt").read_text()
    assert "radiodiff" not in requirements and "torch==" in requirements and "scipy==" in requirements


def test_the_guard_refuses_deep_json_and_big_bodies_before_parsing(saved_model):
    _, model, buildings, txs = saved_model
    client = _client(model, max_body_bytes=2_000_000)
    for depth in (5_000, 100_000):
        response = client.post("/invocations", content=b"[" * depth + b"]" * depth,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and f"nested {depth} levels deep" in response.json()["message"]
    big = b'{"inputs": {"buildings": [' + b"0," * 1_500_000 + b'0], "tx": [1, 2]}}'
    response = client.post("/invocations", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "at most 2,000,000" in response.json()["message"]
    assert client.get("/ping").status_code == 200
    good = client.post("/invocations", json={"inputs": {"buildings": buildings.astype(int).tolist(),
                                                        "tx": list(txs[0])}})
    assert good.status_code == 200  # and it still serves


def test_a_streamed_body_over_the_limit_is_cut_off_before_the_app_reads_it():
    import asyncio

    from radiodiff.tracking.server import RequestGuard

    called = []

    async def app(scope, receive, send):
        called.append(scope["path"])

    chunks = [{"type": "http.request", "body": b"[" + b"0," * 300, "more_body": True}] * 4
    chunks.append({"type": "http.request", "body": b"0]", "more_body": False})
    sent = []

    async def receive():
        return chunks.pop(0)

    async def send(message):
        sent.append(message)

    guard = RequestGuard(app, max_body_bytes=1000)
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": []}  # chunked: no length
    asyncio.run(guard(scope, receive, send))
    assert not called and sent[0]["status"] == 413 and not chunks  # read to the end, dropped, refused
    chunks.extend([{"type": "http.request", "body": b"0," * 5000, "more_body": True}] * 5)
    asyncio.run(guard(scope, receive, send))  # past 16x the limit: refused without reading on
    assert not called and sent[-2]["status"] == 413 and len(chunks) == 3
    headers = [(b"content-length", b"5000"), (b"expect", b"100-continue")]
    asyncio.run(guard({**scope, "headers": headers}, receive, send))  # the client waits: refused unread
    assert not called and sent[-2]["status"] == 413 and len(chunks) == 3
    asyncio.run(guard({**scope, "method": "GET", "path": "/ping"}, receive, send))
    assert called == ["/ping"]


def test_concurrent_requests_share_forward_passes_and_get_their_own_maps(saved_model):
    import threading

    _, model, buildings, txs = saved_model
    inner = model.unwrap_python_model()
    free = np.argwhere(~buildings[:48, :48])[::97][:8]
    requests = [{"buildings": buildings, "tx": [int(r), int(c)]} for r, c in free]
    alone = [model.predict(request) for request in requests]
    run_alone = inner._predictor.predict
    first_call = threading.Event()

    def held_predict(queries, **kwargs):  # the first pass waits until the other 7 requests queue
        if not first_call.is_set():
            first_call.set()
            deadline = time.monotonic() + 20
            while len(inner._batcher._queue) < len(requests) - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        return run_alone(queries, **kwargs)

    inner._predictor.predict = held_predict
    before = dict(inner.batching)
    answers = [None] * len(requests)
    try:
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, model.predict(requests[i])))
                   for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        inner._predictor.predict = run_alone
    after = inner.batching
    assert after["requests"] - before["requests"] == 8 and after["batches"] - before["batches"] == 2
    for own, shared in zip(alone, answers):
        assert shared.shape == (1, RES, RES) and np.allclose(own, shared, atol=1e-5)


def test_the_served_bank_is_only_read_and_close_removes_the_scratch_folder(served_files, tmp_path, monkeypatch):
    import mlflow

    from radiodiff.tracking.registry import save_flux_model

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    files, _ = served_files
    folder = save_flux_model(tmp_path / "model", ldm_path=files / "models" / "ldm.pt",
                             vae_path=files / "models" / "vae.pt", flux=FLUX, resolution=RES, bank_dir=files / "bank")
    logged_bank = folder / "artifacts" / "bank"
    before = {p.name: p.read_bytes() for p in logged_bank.iterdir()}
    model = mlflow.pyfunc.load_model(str(folder))
    new_layout = np.zeros((SIDE, SIDE), dtype=bool)
    new_layout[100:180, 60:200] = True
    model.predict({"buildings": new_layout, "tx": [10, 10]})  # a miss: stored in the scratch serving bank
    scratch = list((tmp_path / "tmp").iterdir())
    assert len(scratch) == 1 and list((scratch[0] / "bank-serving").glob("part-*.parquet"))
    assert {p.name: p.read_bytes() for p in logged_bank.iterdir()} == before
    model.unwrap_python_model().close()
    assert not scratch[0].exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_for_ping(url: str, process: subprocess.Popen, log: Path, timeout: float = 100.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"radiodiff serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"radiodiff serve did not answer /ping in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(request, tmp_path):
    """Start `radiodiff serve` for a model URI on a free loopback port; returns a function
    (uri -> (base url, process)). The server is stopped in a finalizer if a test left it up."""
    def start(model_uri: str) -> tuple[str, subprocess.Popen]:
        port = _free_port()
        bin_dir = str(Path(sys.executable).parent)
        (tmp_path / "tmp").mkdir(exist_ok=True)
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                   MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
                   OMP_NUM_THREADS="1",  # one torch thread, as the tests run in (a busy 2-core machine)
                   TMPDIR=str(tmp_path / "tmp"))  # the served bank's scratch folder stays inside the test's folder
        log = tmp_path / "serve.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(Path(bin_dir) / "radiodiff"), "serve", "--model", model_uri, "--host", "127.0.0.1",
                 "--port", str(port), "--max-body-mb", "20"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        request.addfinalizer(lambda: _stop(process))
        url = f"http://127.0.0.1:{port}"
        _wait_for_ping(url, process, log)
        return url, process
    return start


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's process group, hard after 15 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def _post_bytes(url: str, body: bytes) -> tuple[int, dict, float]:
    """POST a raw JSON body; (status, answer, seconds)."""
    start = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), time.perf_counter() - start
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), time.perf_counter() - start


def _png(path: Path, mask: np.ndarray) -> str:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return str(path)


def _cli_gain(files: Path, tmp_path: Path, buildings: np.ndarray, tx, cars, capsys) -> np.ndarray:
    """`radiodiff predict` on one map with a copy of the bank: gray PNG values `[R, R]` (0..255)."""
    from radiodiff.cli import main

    out = tmp_path / "cli_gain.png"
    args = ["predict", "--buildings", _png(tmp_path / "buildings.png", buildings), "--tx", str(tx[0]), str(tx[1]),
            "--out", str(out), "--models", str(files / "models"), "--params", str(files / "params.yaml"),
            "--bank", str(tmp_path / "cli_bank")]
    if cars is not None:
        args += ["--cars", _png(tmp_path / "cars.png", cars)]
    assert main(args) == 0
    assert "bank: nearest" in capsys.readouterr().out  # the same stored midpoint the server takes
    return np.asarray(Image.open(out), dtype=np.float64)


@pytest.mark.slow
def test_served_model_answers_like_radiodiff_predict_and_refuses_bad_requests(
        served_files, mlflow_store, server, tmp_path, capsys):
    import mlflow

    from radiodiff import tracking
    from radiodiff.artifacts.keys import model_hash
    from radiodiff.tracking.registry import MODEL_NAME, register_flux_model

    files, scene = served_files
    models = files / "models"
    with tracking.stage_run("evaluate", {"flux": FLUX}):
        version = register_flux_model(ldm_path=models / "ldm.pt", vae_path=models / "vae.pt", flux=FLUX,
                                      resolution=RES, tail_path=models / "flux_tail.pt", bank_dir=files / "bank",
                                      tags={"flux_nmse": 0.123456789}, max_rows=MAX_ROWS)
    assert version == 1
    tags = mlflow.MlflowClient().get_model_version(MODEL_NAME, "1").tags
    assert tags["model_hash"] == model_hash(models / "ldm.pt") and tags["flux_nmse"] == "0.123457"
    assert tags["tail"] == "true" and tags["bank"] == "true"

    # A layout of the bank at 1 m: its 8 m majority is the stored scene (a nearest hit at distance 0).
    buildings = np.kron(scene, np.ones((SIDE // RES, SIDE // RES), dtype=bool))
    free = np.argwhere(~scene)
    txs = [tuple(int(v) * (SIDE // RES) + 4 for v in free[0]), tuple(int(v) * (SIDE // RES) + 4 for v in free[-1])]
    cars = np.zeros((SIDE, SIDE), dtype=bool)
    cars[100:108, 0:64] = True
    # A record without cars says `"cars": null`: MLflow's parser refuses a key missing from one record.
    good = {"dataframe_records": [{"buildings": buildings.astype(int).tolist(), "tx": list(txs[0]), "cars": None},
                                  {"buildings": buildings.astype(int).tolist(), "tx": list(txs[1]),
                                   "cars": cars.astype(int).tolist()}]}
    shutil.copytree(files / "bank", tmp_path / "cli_bank")

    url, process = server(f"models:/{MODEL_NAME}/{version}")
    status, body = _post(url + "/invocations", good)
    assert status == 200
    served = np.asarray(body["predictions"], dtype=np.float64)
    assert served.shape == (2, RES, RES) and 0.0 <= served.min() and served.max() <= 1.0
    assert not np.allclose(served[0], served[1])
    for row, (tx, row_cars) in enumerate(zip(txs, (None, cars))):
        gray = _cli_gain(files, tmp_path, buildings, tx, row_cars, capsys)
        # The PNG holds rint(255 * gain): equal gains land within half a gray level.
        assert np.abs(served[row] * 255.0 - gray).max() <= 0.51

    small = {"dataframe_records": [{"buildings": buildings[:128, :128].astype(int).tolist(), "tx": [1, 2]}]}
    status, body = _post(url + "/invocations", small)
    assert 400 <= status < 500 and "map 0: buildings: layout has shape (128, 128), expected 256x256" in body["message"]
    status, body = _post(url + "/invocations", {"dataframe_records": good["dataframe_records"] * 2})
    assert 400 <= status < 500 and "holds 4 maps; at most 2 per request" in body["message"]
    status, body = _post(url + "/invocations", good)  # the server survived and still answers the same
    assert status == 200 and np.allclose(np.asarray(body["predictions"]), served, atol=1e-6)
    status, body = _post(url + "/invocations", {**good, "params": {"full_resolution": True}})
    assert status == 200
    full = np.asarray(body["predictions"], dtype=np.float64)
    assert full.shape == (2, SIDE, SIDE) and (full[:, buildings] == 0).all()
    assert np.allclose(full[0], upsample_gain(served[0].astype(np.float32), buildings), atol=1e-5)

    # 8 concurrent clients: every answer 200 and equal to the lone one.
    from concurrent.futures import ThreadPoolExecutor

    one = json.dumps({"dataframe_records": good["dataframe_records"][:1]}).encode()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _post_bytes(url + "/invocations", one), range(8 * 5)))
    assert all(status == 200 for status, _, _ in results), [r[:2] for r in results if r[0] != 200][:2]
    assert all(np.allclose(np.asarray(body["predictions"])[0], served[0], atol=1e-5) for _, body, _ in results)

    # Hostile bodies are refused before parsing, and the server stays up.
    status, body, seconds = _post_bytes(url + "/invocations", b'{"inputs": [' + b"0.0," * 15_000_000 + b"0]}")
    assert status == 413 and "at most 20,000,000" in body["message"], body
    status, body, _ = _post_bytes(url + "/invocations", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested 100000 levels deep" in body["message"]
    assert _post(url + "/invocations", good)[0] == 200

    # SIGTERM: the server exits and its scratch folder (the served bank's misses) goes with it.
    assert list((tmp_path / "tmp").glob("radiodiff-served-bank-*"))
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    assert not list((tmp_path / "tmp").glob("radiodiff-served-bank-*")), (tmp_path / "serve.log").read_text()[-2000:]


def test_champion_alias_follows_the_gate_and_the_best_nmse(mlflow_store, tmp_path):
    """evaluate's promotion rule on bare registry versions: gate passed and NMSE at most the
    champion's (a 1% tie promotes the newer); a failed gate or a worse NMSE leaves the alias."""
    import mlflow

    from radiodiff import tracking
    from radiodiff.tracking.registry import CHAMPION, promote_champion

    tracking.configure()
    client = mlflow.MlflowClient()
    client.create_registered_model("toy-flux")

    def version(nmse: float) -> int:
        made = client.create_model_version("toy-flux", source=str(tmp_path), tags={"flux_nmse": str(nmse)})
        return int(made.version)

    def champion() -> int:
        return int(client.get_model_version_by_alias("toy-flux", CHAMPION).version)

    first = version(0.05)
    assert promote_champion(first, nmse=0.05, gate=True, name="toy-flux")[0] and champion() == first
    worse = version(0.06)
    promoted, reason = promote_champion(worse, nmse=0.06, gate=True, name="toy-flux")
    assert not promoted and "worse than champion version 1's 0.05" in reason and champion() == first
    tie = version(0.0504)
    assert promote_champion(tie, nmse=0.0504, gate=True, name="toy-flux")[0] and champion() == tie
    ungated = version(0.01)
    promoted, reason = promote_champion(ungated, nmse=0.01, gate=False, why_not="Flux does not count (x)",
                                        name="toy-flux")
    assert not promoted and champion() == tie and reason == "not promoted: Flux does not count (x)"
    assert client.get_model_version("toy-flux", str(ungated)).tags["champion_decision"] == reason


def test_a_moved_checkout_keeps_its_runs_artifacts_and_registered_models(tmp_path, monkeypatch, capsys):
    import mlflow

    from radiodiff import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RADIODIFF_ARTIFACT_ROOT", raising=False)
    old = tmp_path / "old" / "checkout"
    old.mkdir(parents=True)
    monkeypatch.chdir(old)
    tracking.configure()
    with tracking.stage_run("prepare", {"a": 1}) as run:
        (old / "note.txt").write_text("kept")
        run.log_artifact(old / "note.txt", folder="files")
    client = mlflow.MlflowClient()
    client.create_registered_model("toy")
    client.create_model_version("toy", source=f"{mlflow.get_run(run.run_id).info.artifact_uri}/files")

    new = tmp_path / "new" / "checkout"
    new.parent.mkdir()
    old.rename(new)
    monkeypatch.chdir(new)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # a new process: MLflow sets it in this one
    tracking.configure()
    assert "artifact locations rewritten" in capsys.readouterr().err
    moved = mlflow.get_run(run.run_id).info.artifact_uri
    assert moved.startswith((new / "mlruns" / "artifacts").as_uri())
    assert Path(mlflow.artifacts.download_artifacts(f"{moved}/files/note.txt")).read_text() == "kept"
    assert mlflow.MlflowClient().get_model_version("toy", "1").source.startswith((new / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    tracking.configure()  # nothing moved since: nothing rewritten
    assert "rewritten" not in capsys.readouterr().err


def test_content_logged_once_per_digest_is_referenced_by_later_runs(mlflow_store, tmp_path):
    import mlflow

    from radiodiff import tracking

    folder = tmp_path / "bank"
    folder.mkdir()
    (folder / "part.parquet").write_bytes(b"same bytes")
    holders = []
    for _ in range(2):
        with tracking.stage_run("build_bank", {"a": 1}) as run:
            holders.append((run.run_id, run.log_artifact_once(folder, folder="bank", digest="d1")))
    (first, held_first), (second, held_second) = holders
    assert held_first == first and held_second == first  # the second run points at the first's copy
    client = mlflow.MlflowClient()
    assert [a.path for a in client.list_artifacts(first)] == ["bank"] and client.list_artifacts(second) == []
    assert client.get_run(second).data.tags["bank_run"] == first
    with tracking.stage_run("build_bank", {"a": 1}) as run:
        assert run.log_artifact_once(folder, folder="bank", digest="d2") == run.run_id  # new content: logged
