"""The bad-input properties at 1,000 generated examples per entry point (slow; CI runs them).

The fast suite draws a few dozen examples per property (`tests/test_bad_*.py`). Here the same
properties, re-decorated from their undecorated bodies with the same strategies, run at
`THOROUGH` examples: the params loader, `radiodiff simulate`, `radiodiff predict` (a layout
and a Tx; a query file), the served model's request check, and the RadioMapSeer importer
(whose space of defects is finite: every case is drawn). Each must answer with success on
valid input and otherwise one `error:` line, exit 2 and no partial output.

`radiodiff predict` loads its model files on every call; here the loader hands back one
predictor built once from the same files, so a thousand calls fit the budget. Every check
before and after sampling is the command's own.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import tests.test_bad_cli as cli
import tests.test_bad_import as importer
import tests.test_bad_params as params
from tests.bad_input_helpers import HEALTH, assert_refused, files_under

THOROUGH = settings(max_examples=1000, deadline=None, suppress_health_check=HEALTH, derandomize=True)
pytestmark = pytest.mark.slow
models = cli.models  # the toy 32 x 32 model files of the predict properties (a module fixture)


def thorough(test, **strategies):
    """The undecorated body of property `test`, drawn from `strategies` `THOROUGH`ly."""
    return THOROUGH(given(**strategies)(test.hypothesis.inner_test))


# -- params ------------------------------------------------------------------------------------

test_thorough_params_documents = thorough(
    params.test_random_params_documents_load_or_fail_in_one_line,
    document=st.dictionaries(st.sampled_from([*params.TOP_KEYS, "bogus", "1"]), params.VALUES, max_size=4))
test_thorough_params_values = thorough(
    params.test_any_value_at_any_setting_of_the_real_params_loads_or_fails_in_one_line,
    leaf=st.sampled_from(params.LEAVES), value=params.VALUES)
test_thorough_params_bytes = thorough(params.test_random_bytes_as_params_fail_in_one_line,
                                      payload=st.binary(max_size=64))
test_thorough_params_wrong_types = thorough(params.test_a_wrong_type_at_any_setting_is_refused_and_named,
                                            leaf=st.sampled_from(params.LEAVES), data=st.data())

# -- radiodiff simulate -------------------------------------------------------------------------

test_thorough_simulate_files = thorough(cli.test_simulate_file_form_succeeds_exactly_on_valid_input,
                                        layout=cli.LAYOUTS, data=st.data(), pixel_size=cli.PIXEL_SIZES)
test_thorough_simulate_flags = thorough(cli.test_simulate_random_flag_soup_never_tracebacks, argv=cli.FLAG_SOUP)

# -- radiodiff predict --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_predictor(models):
    """`FluxPredictor.from_files` answering every call with one predictor loaded once."""
    from radiodiff import serve
    from radiodiff.config import load_params

    loaded = {}
    original = serve.FluxPredictor.from_files.__func__

    def cached(cls, **kwargs):
        key = tuple(sorted((k, str(v)) for k, v in kwargs.items()))
        if key not in loaded:
            loaded[key] = original(cls, **kwargs)
        return loaded[key]

    monkey = pytest.MonkeyPatch()
    monkey.setattr(serve.FluxPredictor, "from_files", classmethod(cached))
    load_params(models / "params.yaml")  # the files fit
    yield models
    monkey.undo()


@THOROUGH
@given(layout=cli.PREDICT_LAYOUTS, row=st.integers(-2, 257), col=st.integers(-2, 257))
def test_thorough_predict_layouts_and_tx(one_predictor, layout, row, col, capsys):
    cli.test_predict_succeeds_only_on_valid_layouts_and_tx.hypothesis.inner_test(one_predictor, layout, row, col,
                                                                                  capsys)


QUERY_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-300, 300), st.floats(allow_nan=True),
                         st.text(max_size=12), st.lists(st.integers(-300, 300), max_size=3),
                         st.sampled_from(["layouts/a.png", "layouts/none.png", "../a.png", "/etc/passwd", ""]))
QUERY_LINES = st.one_of(
    st.dictionaries(st.sampled_from(["buildings", "tx", "cars", "power", ""]), QUERY_VALUES, max_size=4)
    .map(json.dumps),
    st.tuples(st.integers(-2, 257), st.integers(-2, 257))
    .map(lambda tx: json.dumps({"buildings": "layouts/a.png", "tx": list(tx)})),
    st.text(max_size=30),  # not JSON at all
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
)


@THOROUGH
@given(lines=st.lists(QUERY_LINES, min_size=1, max_size=3))
def test_thorough_predict_query_files(one_predictor, lines, capsys):
    """A query file of random lines: maps for all of it, or one error line, exit 2, nothing written."""
    from PIL import Image

    from radiodiff.cli import main

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "layouts").mkdir()
        Image.fromarray(cli._blocks(1, 4)).save(folder / "layouts" / "a.png")
        queries = folder / "q.jsonl"
        queries.write_text("\n".join(lines) + "\n")
        before = files_under(folder)
        argv = ["predict", "--queries", str(queries), "--out", str(folder / "maps"),
                "--models", str(one_predictor / "models"), "--params", str(one_predictor / "params.yaml")]
        code = main(argv)
        _, err = capsys.readouterr()
        event("accepted" if code == 0 else "refused")
        if code == 0:  # one map per non-blank line (blank lines are skipped)
            assert len(list((folder / "maps").iterdir())) == sum(bool(line.strip()) for line in lines)
        else:
            assert_refused(code, err, folder, before)


# -- the served model's request check ------------------------------------------------------------

GRIDS = st.one_of(
    st.sampled_from([(256, 256), (255, 256), (2, 2), (256,), (1, 256, 256)]).map(lambda s: np.zeros(s).tolist()),
    st.integers(0, 10**6).map(lambda s: np.random.default_rng(s).integers(0, 2, (256, 256)).tolist()),
    st.integers(0, 10**6).map(lambda s: (np.random.default_rng(s).integers(0, 2, (256, 256)) * 255).tolist()),
    QUERY_VALUES)
REQUESTS = st.one_of(
    st.fixed_dictionaries({"buildings": GRIDS, "tx": QUERY_VALUES}, optional={"cars": GRIDS}),
    st.dictionaries(st.sampled_from(["buildings", "tx", "cars", "x"]), QUERY_VALUES, max_size=3),
    QUERY_VALUES)


@THOROUGH
@given(request=REQUESTS)
def test_thorough_served_requests_are_maps_or_one_clear_refusal(request):
    from radiodiff.errors import UserError
    from radiodiff.tracking.request import parse_request

    try:
        maps = parse_request(request, max_rows=4)
    except UserError as exc:
        event("refused")
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    event("accepted")
    assert all(m.buildings.shape == (256, 256) and m.buildings.dtype == bool for m in maps)


# -- the RadioMapSeer importer (every case of its finite space) -------------------------------------

test_thorough_importer = thorough(importer.test_importer_refuses_bad_gain_maps_and_writes_no_dataset,
                                  defect=st.sampled_from(importer.DEFECTS), traffic=st.booleans())
