"""Bad input: the RadioMapSeer importer (prepare with source radiomapseer) and the `prepare`
stage's entry point refuse bad gain maps and folders that are not RadioMapSeer with a one-line
`UserError` (exit code 2 from the entry point), never a traceback and never a partial dataset.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from radiodiff.config import PrepareConfig, SplitSizes, TargetSource
from radiodiff.errors import UserError
from tests.bad_input_helpers import HEALTH, assert_refused, files_under, write_png

IMPORT_CFG = {"source": TargetSource.RADIOMAPSEER, "maps": SplitSizes(train=1, val=0, test=0), "tx_per_map": 2,
                  "resolution": 64, "workers": 1}


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _gain_images(draw_defect: str, shape=(256, 256)) -> list[np.ndarray | bytes | None]:
    good = np.full(shape, 120, np.uint8)
    defect = {
        "none": good,
        "missing": None,
        "wrong-size": np.full((128, 256), 120, np.uint8),
        "sixteen-bit": np.full(shape, 30000, np.uint16),
        "rgb": np.stack([good] * 3, -1),
        "truncated": b"\x89PNG\r\n\x1a\n\x00\x00",
        "not-an-image": b"map_id,tx_id\n",
        "pixels-cut-short": _png_bytes(np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8))[:3000],
    }[draw_defect]
    return [good, defect]


DEFECTS = ["none", "missing", "wrong-size", "sixteen-bit", "rgb", "truncated", "not-an-image", "pixels-cut-short"]


@settings(max_examples=20, deadline=None, suppress_health_check=HEALTH)  # all 16 cases
@given(defect=st.sampled_from(DEFECTS), traffic=st.booleans())
def test_importer_refuses_bad_gain_maps_and_writes_no_dataset(defect, traffic):
    """Static samples read `gain/DPM`; with `dynamic` 1 every Tx also has a traffic twin read
    from `gain/carsDPM`, where the defect then sits (the DPM files being good)."""
    from radiodiff.data.prepare import plan_jobs, run_prepare

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        cfg = PrepareConfig(radiomapseer_dir=str(folder / "rms"), dynamic=1.0 if traffic else 0.0, **IMPORT_CFG)
        gain_dirs = {"DPM": _gain_images("none"), "carsDPM": _gain_images(defect)} if traffic \
            else {"DPM": _gain_images(defect)}
        (job,) = plan_jobs(cfg)
        for name, images in gain_dirs.items():
            gain_dir = folder / "rms" / "gain" / name
            gain_dir.mkdir(parents=True)
            for tx_id, image in zip(job.tx_ids, images):
                path = gain_dir / f"{job.map_id}_{tx_id}.png"
                if isinstance(image, bytes):
                    path.write_bytes(image)
                elif image is not None:
                    write_png(path, image)
        out = folder / "dataset"
        if defect == "none":
            result = run_prepare(cfg, out_dir=out, cache_dir=folder / "cache", progress=False)
            assert result.metrics["samples_train"] == (4 if traffic else 2) and (out / "index.parquet").is_file()
            assert result.metrics["samples_with_cars"] == (2 if traffic else 0)
            return
        with pytest.raises(UserError) as refused:
            run_prepare(cfg, out_dir=out, cache_dir=folder / "cache", progress=False)
        message = str(refused.value)
        assert "\n" not in message and f"{job.map_id}_{job.tx_ids[1]}.png" in message
        assert not out.exists() and not list(folder.glob(".dataset*"))


@pytest.mark.parametrize("layout", ["no-gain-folder", "rms-is-a-file", "missing-folder"])
def test_importer_refuses_a_folder_that_is_not_radiomapseer(tmp_path, layout):
    from radiodiff.data.prepare import run_prepare

    root = tmp_path / "rms"
    if layout == "no-gain-folder":
        (root / "png").mkdir(parents=True)
    elif layout == "rms-is-a-file":
        root.write_text("x")
    cfg = PrepareConfig(radiomapseer_dir=str(root), **IMPORT_CFG)
    with pytest.raises(UserError, match="RadioMapSeer"):
        run_prepare(cfg, out_dir=tmp_path / "dataset", cache_dir=tmp_path / "cache", progress=False)
    assert not (tmp_path / "dataset").exists() and not (tmp_path / "cache").exists()


def test_prepare_stage_reports_a_bad_gain_file_in_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """The DVC stage's own entry point: the gain files are checked before Prefect fans out the maps,
    so a bad file is one line, not an orchestrator traceback from inside a task."""
    from pipelines.prepare import main as prepare_main
    from radiodiff.data.prepare import plan_jobs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RADIODIFF_TORCH_THREADS", "1")  # the entry point sets torch's thread count
    cfg = PrepareConfig(radiomapseer_dir=str(tmp_path / "rms"), **IMPORT_CFG)
    gain_dir = tmp_path / "rms" / "gain" / "DPM"
    gain_dir.mkdir(parents=True)
    (job,) = plan_jobs(cfg)
    write_png(gain_dir / f"{job.map_id}_{job.tx_ids[0]}.png", np.full((256, 256), 120, np.uint8))
    write_png(gain_dir / f"{job.map_id}_{job.tx_ids[1]}.png", np.full((256, 256, 3), 120, np.uint8))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"prepare": {
        "source": "radiomapseer", "radiomapseer_dir": str(tmp_path / "rms"), "maps": {"train": 1, "val": 0, "test": 0},
        "tx_per_map": 2, "resolution": 64, "workers": 1}}))
    before = files_under(tmp_path)
    assert prepare_main(["--params", "params.yaml"]) == 2
    assert_refused(2, capsys.readouterr().err, tmp_path, before, "image mode RGB", f"{job.map_id}_{job.tx_ids[1]}")
