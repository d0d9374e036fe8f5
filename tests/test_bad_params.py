"""Bad input, property-based: params files. `load_params` answers every mistake (unknown keys,
wrong types, NaN/inf, out-of-range values, bytes that are not YAML) with a one-line `UserError`
that names the file, never a traceback.

Hypothesis draws the documents and values; settings of the wrong type must be refused, so a
wrongly accepted input fails too.
"""

from __future__ import annotations

import dataclasses
import enum
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from radiodiff.config import Params, load_params
from radiodiff.errors import UserError
from tests.bad_input_helpers import SETTINGS
from tests.conftest import REPO_ROOT

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.text(max_size=8),
                    st.floats(allow_nan=True, allow_infinity=True))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)


def _leaf_fields(cls, prefix=()):
    """(path, type hint) of every scalar setting of a config dataclass, nested ones included."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaf_fields(hint, (*prefix, field.name))
        else:
            yield (*prefix, field.name), hint


LEAVES = sorted(_leaf_fields(Params))


def _nest(path: tuple[str, ...], value) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


def _load_text(text: str | bytes) -> Params | None:
    """load_params on a temporary file: the Params, or None after a one-line UserError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        try:
            return load_params(path)
        except UserError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
            return None


TOP_KEYS = [f.name for f in dataclasses.fields(Params)]


@SETTINGS
@given(document=st.dictionaries(st.sampled_from([*TOP_KEYS, "bogus", "1"]), VALUES, max_size=3))
def test_random_params_documents_load_or_fail_in_one_line(document):
    _load_text(yaml.safe_dump(document))


@SETTINGS
@given(leaf=st.sampled_from(LEAVES), value=VALUES)
def test_any_value_at_any_setting_of_the_real_params_loads_or_fails_in_one_line(leaf, value):
    """The shipped params.yaml with one setting replaced: its checks must catch what types allow."""
    document = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    path, _ = leaf
    section = document
    for key in path[:-1]:
        section = section.setdefault(key, {})
    section[path[-1]] = value
    _load_text(yaml.safe_dump(document))


@SETTINGS
@given(payload=st.binary(max_size=64))
def test_random_bytes_as_params_fail_in_one_line(payload):
    _load_text(payload)


def _wrong_value(hint):
    """Values that are not of type `hint` (as YAML would give them)."""
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
    wrong = {bool: [1, "yes", 2.5], int: [True, 2.5, "3", [1]], float: ["fast", True, float("nan"), float("inf")],
             str: [3, True, [1]]}
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return ["no-such-mode", 3]
    return wrong.get(base, [{"a": 1}])


@SETTINGS
@given(leaf=st.sampled_from(LEAVES), data=st.data())
def test_a_wrong_type_at_any_setting_is_refused_and_named(leaf, data):
    path, hint = leaf
    assume(hint is not typing.Any and "None" not in str(hint) and typing.get_origin(hint) is not dict)
    value = data.draw(st.sampled_from(_wrong_value(hint)))
    if typing.get_origin(hint) is tuple:
        value = data.draw(st.sampled_from([[value], value if not isinstance(value, list) else "x"]))
    with tempfile.TemporaryDirectory() as folder:
        params = Path(folder) / "params.yaml"
        params.write_text(yaml.safe_dump(_nest(path, value)))
        with pytest.raises(UserError) as refused:
            load_params(params)
    assert ".".join(path[:-1]) in str(refused.value) and "\n" not in str(refused.value)


@SETTINGS
@given(leaf=st.sampled_from(LEAVES), key=st.one_of(st.text(min_size=1, max_size=8), st.integers(), st.none()))
def test_an_unknown_key_beside_any_setting_is_refused(leaf, key):
    path, _ = leaf
    fields = {f.name for f in dataclasses.fields(Params)} | {p[-1] for p, _ in LEAVES}
    assume(str(key) not in fields)
    document = _nest(path[:-1], {key: 1}) if len(path) > 1 else {key: 1}
    with tempfile.TemporaryDirectory() as folder:
        params = Path(folder) / "params.yaml"
        params.write_text(yaml.safe_dump(document))
        with pytest.raises(UserError, match="unknown key"):
            load_params(params)


@pytest.mark.parametrize(("text", "fragment"), [
    ("prepare: {seed: -1}\n", "seed must be >= 0"),
    ("flux: {seeds: [99999999999999999999]}\n", "seeds must be in"),
    ("flux: {splits: [train, ../../etc]}\n", "splits must be among"),
    ("flux: {nearest_max_distance: .nan}\n", "finite"),
    ("vae: {kl_weight: -.inf}\n", "finite"),
    ("vae: {kl_weight: 1" + "0" * 400 + "}\n", "finite"),  # an int past float range
    ("prepare: {3: 1, a: 2}\n", "unknown key(s) 3, a"),
    ('prepare: {"a\\nb": 1}\n', "unknown key(s) a\\nb"),  # a key with a line break
    ("vae: {train: {total_steps: 0}}\n", "vae.train: total_steps"),
    (b"\xff\xfeprepare: 1", "not valid YAML"),
    ("prepare: !!python/object/apply:os.getcwd []\n", "not valid YAML"),
    ("flux: {nearest_max_distance: -1}\n", "nearest_max_distance must be in [0, 1]"),
    ("evaluate: {edit_shares: [0.5, 1.5]}\n", "every edit share in (0, 1]"),
    ("evaluate: {edited_scenes: 2, edit_shares: []}\n", "edit_shares is empty"),
    ("prepare: " + "[" * 5000 + "]" * 5000 + "\n", "params.yaml"),  # nesting past the parser's stack
])
def test_params_mistakes_found_by_the_properties(text, fragment):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(UserError) as refused:
            load_params(path)
    assert fragment in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("levels", [7, 9])
def test_a_yaml_alias_bomb_is_refused_fast_in_one_short_line(levels, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("prepare:\n  seed: [" + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" if i else
                                                     "&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"
                                                     for i in range(levels)) + "]\n")
    assert path.stat().st_size < 2000
    with pytest.raises(UserError) as refused:
        load_params(path)
    message = str(refused.value)
    assert "alias" in message and "\n" not in message and len(message) < 400, message


def test_a_few_aliases_still_load(tmp_path):
    """Anchors are YAML a user may write: a small expansion is not refused."""
    path = tmp_path / "params.yaml"
    path.write_text("vae: {train: &loop {total_steps: 7}}\nbaseline: {train: *loop}\n")
    params = load_params(path)
    assert params.vae.train.total_steps == params.baseline.train.total_steps == 7


def test_a_huge_value_is_quoted_short(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("prepare: {seed: [" + ", ".join(["123456789"] * 5_000) + "]}\n")
    with pytest.raises(UserError) as refused:
        load_params(path)
    assert "prepare.seed" in str(refused.value) and len(str(refused.value)) < 200, str(refused.value)


def test_an_oversized_params_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("prepare: {seed: 1}\n" + "# padding\n" * 60_000)
    with pytest.raises(UserError, match="bytes, more than a params file can be"):
        load_params(path)
