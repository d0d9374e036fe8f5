"""params.yaml parsing: strict keys and types, enums, and dvc.yaml's params lists."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from radiodiff.config import Params, PrepareConfig, TargetSource, load_params
from radiodiff.errors import UserError
from tests.conftest import REPO_ROOT


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repository_params_load():
    params = load_params(REPO_ROOT / "params.yaml")
    assert isinstance(params.prepare, PrepareConfig)
    assert params.prepare.source is TargetSource.SIMULATE


def test_defaults_live_in_the_dataclass(tmp_path):
    assert load_params(write(tmp_path, "prepare: {}\n")) == Params()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("prepare: {tx_per_mapp: 3}\n", "unknown key(s) tx_per_mapp"),
        ("preparee: {}\n", "unknown key(s) preparee"),
        ("prepare: {tx_per_map: '3'}\n", "prepare.tx_per_map: expected int"),
        ("prepare: {tx_per_map: true}\n", "prepare.tx_per_map: expected int"),
        ("prepare: {dynamic: '0.5'}\n", "prepare.dynamic: expected float"),
        ("prepare: {dynamic: 1.5}\n", "share of Tx with a traffic sample"),
        ("prepare: {source: raytrace}\n", "not one of: simulate, radiomapseer"),
        ("prepare: {resolution: 60}\n", "resolution must divide 256"),
        ("prepare: {maps: {train: 900}}\n", "train must be in 0..501"),
        ("prepare: {maps: [1, 2]}\n", "prepare.maps: expected a mapping"),
        ("prepare: {source: radiomapseer}\n", "needs radiomapseer_dir"),
        ("prepare: [1\n", "not valid YAML"),
        ("ldm: {loss_weighting: min_snr, diffusion: {prediction: flow}}\n", "min_snr needs prediction eps, v or x0"),
        ("baseline: {compute_parity: true, train: {total_steps: 9, optim: {lr: 1.0e-3, min_lr: 0.0}}}\n",
         "compute_parity trains any steps past its plan at train.optim.min_lr: set it above 0"),
    ],
)
def test_bad_params_are_one_clear_user_error(tmp_path, text, fragment):
    with pytest.raises(UserError) as info:
        load_params(write(tmp_path, text))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_missing_params_file(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PrepareConfig().tx_per_map = 3  # type: ignore[misc]


def _keys_exist(section_cls, dotted: list[str]) -> bool:
    cls = section_cls
    for depth, part in enumerate(dotted):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return False
        cls = hints[part]
        if not dataclasses.is_dataclass(cls):
            return depth == len(dotted) - 1
    return True


def test_every_dvc_params_key_exists_in_its_dataclass():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    sections = {f.name: f.default_factory for f in dataclasses.fields(Params)}
    for name, stage in stages.items():
        for key in stage.get("params", []):
            section, *rest = key.split(".")
            assert section in sections, f"stage {name}: unknown params section {section}"
            section_cls = type(sections[section]())
            assert not rest or _keys_exist(section_cls, rest), f"stage {name}: {key} not in {section_cls.__name__}"


def test_the_other_objectives_must_differ_from_the_served_one_and_each_other(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("ldm:\n  diffusion: {prediction: kc}\n")  # ldm_alt defaults to kc and flow
    with pytest.raises(UserError, match="must not repeat ldm's prediction"):
        load_params(path)
    path.write_text("ldm_alt: {predictions: [flow, flow]}\n")
    with pytest.raises(UserError, match="twice"):
        load_params(path)
    path.write_text("ldm:\n  diffusion: {prediction: kc, preconditioning: radiodiff}\n"
                    "ldm_alt: {predictions: [v, flow]}\n")
    params = load_params(path)
    assert params.ldm.diffusion.preconditioning.value == "radiodiff"
    derived = params.ldm_alt.derive(params.ldm)
    assert [p.value for p in derived] == ["v", "flow"]
    assert all(cfg.diffusion.preconditioning.value == "radiodiff" and cfg.unet == params.ldm.unet
               for cfg in derived.values())
    path.write_text("ldm_alt: {predictions: []}\n")  # no alternatives: only the served objective
    assert load_params(path).ldm_alt.derive(params.ldm) == {}
    path.write_text("ldm:\n  unet: {two_heads: true}\n")  # the objective sets the heads, not params
    with pytest.raises(UserError, match="unknown key"):
        load_params(path)
