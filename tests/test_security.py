"""Security: no code runs from files we read, no shell, and no write escapes its output folder.

The source scan walks the syntax tree of every module in `radiodiff/` and `pipelines/`; each
rule is also run on a small bad snippet, so a scanner that finds nothing cannot pass.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiodiff.config import FluxConfig
from radiodiff.errors import UserError
from radiodiff.io import safe_child

REPO_ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("radiodiff", "pipelines")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound by imports, to their full dotted origin (`np` -> `numpy`)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _full_name(call: ast.Call, aliases: dict[str, str]) -> str:
    dotted = _dotted(call.func)
    head, _, rest = dotted.partition(".")
    origin = aliases.get(head, head)
    return f"{origin}.{rest}" if rest else origin


def unsafe_calls(source: str, where: str = "<snippet>") -> list[str]:
    """Every call in `source` that could run code from a file or a string: one line each."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    problems = []
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        name = _full_name(call, aliases)
        line = f"{where}:{call.lineno}: {name}"
        if name == "torch.load" and not _is_true(_keyword(call, "weights_only")):
            problems.append(f"{line} without weights_only=True")
        elif name.split(".")[0] in PICKLE_MODULES and name.rsplit(".", 1)[-1] in {"load", "loads", "Unpickler"}:
            problems.append(f"{line}: unpickling")
        elif name in {"numpy.load", "pandas.read_pickle"} and (name == "pandas.read_pickle"
                                                               or _is_true(_keyword(call, "allow_pickle"))):
            problems.append(f"{line}: pickled arrays")
        elif name.startswith("subprocess.") and _is_true(_keyword(call, "shell")):
            problems.append(f"{line} with shell=True")
        elif name in {"os.system", "os.popen", "eval", "exec", "yaml.unsafe_load", "yaml.full_load"}:
            problems.append(f"{line}: runs a string")
        elif name == "yaml.load" and not _safe_yaml_loader(_keyword(call, "Loader"), tree):
            problems.append(f"{line} without a SafeLoader")
    return problems


def _safe_yaml_loader(loader: ast.AST | None, tree: ast.AST) -> bool:
    """Whether `Loader=` names yaml's SafeLoader or a class of this module derived from it."""
    name = _dotted(loader) if loader is not None else ""
    if name.rsplit(".", 1)[-1] in {"SafeLoader", "CSafeLoader"}:
        return True
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    if name in classes:
        return any(_safe_yaml_loader(base, tree) for base in classes[name].bases)
    return False


def _sources() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (REPO_ROOT / folder).rglob("*.py"))


def test_scan_covers_the_package():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in _sources()}
    assert {"radiodiff/training/checkpoint.py", "radiodiff/stages/common.py", "pipelines/prepare.py"} <= names


def test_package_has_no_unsafe_loads_shells_or_eval():
    problems = []
    for path in _sources():
        problems += unsafe_calls(path.read_text(), str(path.relative_to(REPO_ROOT)))
    assert problems == []


def test_every_torch_load_in_the_package_is_weights_only():
    loads = 0
    for path in _sources():
        tree = ast.parse(path.read_text())
        aliases = _aliases(tree)
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if _full_name(call, aliases) == "torch.load":
                loads += 1
                assert _is_true(_keyword(call, "weights_only")), f"{path}:{call.lineno}"
    assert loads >= 2  # model files and training checkpoints


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(path)",
    "import torch\ntorch.load(path, weights_only=False)",
    "from torch import load\nload(path, map_location='cpu')",
    "import pickle\npickle.load(handle)",
    "import pickle as p\np.loads(data)",
    "from pickle import Unpickler\nUnpickler(handle).load()",
    "import numpy as np\nnp.load(path, allow_pickle=True)",
    "import pandas as pd\npd.read_pickle(path)",
    "import subprocess\nsubprocess.run(cmd, shell=True)",
    "from subprocess import check_output\ncheck_output(cmd, shell=True)",
    "import os\nos.system(cmd)",
    "eval(text)",
    "exec(text)",
    "import yaml\nyaml.load(text, Loader=yaml.Loader)",
    "import yaml\nyaml.load(text)",
    "import yaml\nyaml.unsafe_load(text)",
])
def test_scanner_flags_each_unsafe_pattern(snippet):
    assert len(unsafe_calls(snippet)) == 1


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(path, map_location='cpu', weights_only=True)",
    "import numpy as np\nnp.load(path, mmap_mode='r')",
    "import subprocess\nsubprocess.run(['git', 'rev-parse', 'HEAD'], check=False)",
    "import pickle\nraise pickle.UnpicklingError('x')",
    "model.eval()",
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nclass L(yaml.SafeLoader):\n    pass\nyaml.load(text, Loader=L)",
])
def test_scanner_passes_safe_patterns(snippet):
    assert unsafe_calls(snippet) == []


# -- output paths stay inside their folder ---------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "/etc/passwd", "a/../../x", "", ".", "a\0b", "sub/.."])
def test_safe_child_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(UserError, match="refusing"):
        safe_child(tmp_path / "out", name)


def test_safe_child_allows_plain_names_and_subfolders(tmp_path):
    assert safe_child(tmp_path, "1_3.png") == tmp_path / "1_3.png"
    assert safe_child(tmp_path, "train/x.npy") == tmp_path / "train" / "x.npy"
    assert safe_child(Path("relative"), "a.json") == Path("relative") / "a.json"


def test_safe_child_refuses_a_symlink_out_of_the_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(outside)
    (root / "file.png").symlink_to(outside / "victim.png")
    for name in ("link/x.png", "file.png"):
        with pytest.raises(UserError, match="symbolic link"):
            safe_child(root, name)
    (root / "inside").symlink_to(root)
    assert safe_child(root, "inside/x.png") == root / "inside" / "x.png"


@settings(max_examples=150, deadline=None)
@given(name=st.text(alphabet=st.sampled_from(list("ab./\\\0~ -")), max_size=12))
def test_safe_child_result_is_always_inside(tmp_path_factory, name):
    root = tmp_path_factory.getbasetemp() / "safe-root"
    try:
        child = safe_child(root, name)
    except UserError:
        return
    assert child.resolve().is_relative_to(root.resolve()) and child.resolve() != root.resolve()


def test_run_folders_cannot_leave_the_work_dir(tmp_path):
    from radiodiff.stages.common import run_folder

    assert run_folder(tmp_path, "train_vae", {"a": 1}).parent == tmp_path / "train_vae"
    for stage in ("../evil", "/tmp/evil"):
        with pytest.raises(UserError, match="refusing"):
            run_folder(tmp_path, stage, {"a": 1})


@pytest.mark.parametrize("map_id", [0, 7, 700, -3, 10**6])
def test_shard_paths_stay_in_the_cache(tmp_path, map_id):
    from radiodiff.data.prepare import MapJob, shard_path

    path = shard_path(MapJob(map_id=map_id, split="train", tx_ids=(1, 2)), tmp_path)
    assert path.parent == tmp_path and path.suffix == ".npz"


def test_stage_metrics_and_plots_stay_in_their_folders(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipelines._stage import save_figure, write_metrics

    monkeypatch.chdir(tmp_path)
    assert write_metrics("prepare", {"maps": 1}) == Path("metrics") / "prepare.json"
    with pytest.raises(UserError, match="refusing"):
        write_metrics("../escaped", {"maps": 1})
    figure = plt.figure()
    with pytest.raises(UserError, match="refusing"):
        save_figure(figure, "../escaped.png")
    plt.close(figure)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["metrics", "prepare.json"]


@pytest.mark.parametrize("splits", [["../../etc"], ["train", "/abs"], ["bogus"]])
def test_flux_splits_that_name_no_dataset_split_are_refused(splits):
    with pytest.raises(ValueError, match="splits must be among"):
        FluxConfig(splits=tuple(splits))


def test_simulate_refuses_an_output_name_linking_out_of_the_folder(tmp_path, capsys):
    from radiodiff.cli import main

    outside = tmp_path / "outside.png"
    outside.write_bytes(b"precious")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "1_3.png").symlink_to(outside)
    assert main(["simulate", "--map-id", "1", "--tx-id", "3", "--out-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "symbolic link" in err and err.count("\n") == 1
    assert outside.read_bytes() == b"precious"
    assert sorted(os.listdir(out_dir)) == ["1_3.png"]


def test_params_yaml_cannot_build_python_objects(tmp_path):
    from radiodiff.config import load_params

    path = tmp_path / "params.yaml"
    path.write_text("prepare: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(path)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
