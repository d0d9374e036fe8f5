"""Both profiles parse, and the paper profile's networks build and run one forward on CPU."""

from __future__ import annotations

import pytest
import torch

from radiodiff.config import load_params
from radiodiff.artifacts.baseline import build_baseline
from radiodiff.artifacts.denoiser import build_unet
from radiodiff.artifacts.vae import build_vae
from tests.conftest import REPO_ROOT


def test_default_profile_is_small():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.prepare.resolution == 64


@pytest.mark.slow
def test_paper_profile_builds_and_runs_one_forward():
    params = load_params(REPO_ROOT / "profiles" / "paper.yaml")
    side = params.prepare.resolution
    assert side == 256
    vae = build_vae(params.vae).eval()
    unet = build_unet(params.ldm, params.condition.channels).eval()
    baseline = build_baseline(params.baseline, params.condition.channels).eval()
    with torch.no_grad():
        latent = vae.encode(torch.rand(1, 1, side, side)).mode()
        assert latent.shape == (1, 3, 64, 64)
        cond = torch.rand(1, params.condition.channels, side, side)
        # RadioDiff's objective: two heads (C and noise) on continuous time
        assert unet(latent, torch.tensor([0.999]), cond).shape == (1, 6, 64, 64)
        assert vae.decode(latent).shape == (1, 1, side, side)
        assert baseline(cond).shape == (1, 1, side, side)


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/paper.yaml"])
def test_every_profile_has_every_section_dvc_tracks(profile):
    # DVC fails a stage whose listed params section is missing from params.yaml, so a profile
    # copied over params.yaml must carry every section dvc.yaml names.
    import yaml

    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    tracked = {section for stage in stages.values() for section in stage.get("params", [])}
    raw = yaml.safe_load((REPO_ROOT / profile).read_text())
    assert tracked <= set(raw), sorted(tracked - set(raw))
    load_params(REPO_ROOT / profile)
