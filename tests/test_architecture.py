"""The layer picture of docs/ARCHITECTURE.md, checked on the source: imports only go down a
floor (or stay on it), no two units import each other in a circle, nothing above
`radiodiff/diffusion/` asks which objective a model holds, and parsing params stays light."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from import_graph import ROOT, cycles, direct_imports, module_file, project_modules, unit

# Longest prefix wins. Floor 0 is the ground (no project import above it), 3 the entry points.
FLOORS = {
    "radiodiff": 0, "radiodiff.errors": 0, "radiodiff.options": 0, "radiodiff.config": 0,
    "radiodiff.typed_yaml": 0, "radiodiff.tune_config": 0, "radiodiff.training.config": 0,
    "radiodiff.offline": 0, "radiodiff.devices": 0, "radiodiff.io": 0, "radiodiff.metrics": 0,
    "radiodiff.progress": 0, "radiodiff.profiles": 0, "radiodiff.dynamic_batching": 0,
    "radiodiff.diffusion": 0,
    "radiodiff.models": 0,
    "radiodiff.data": 1, "radiodiff.sim": 1, "radiodiff.bank": 1, "radiodiff.training": 1,
    "radiodiff.generation": 1, "radiodiff.flux": 1, "radiodiff.artifacts": 1,
    "radiodiff.stages": 2, "radiodiff.evaluation": 2, "radiodiff.serve": 2, "radiodiff.tracking": 2,
    "radiodiff.tuning": 2,
    "radiodiff.cli": 3, "pipelines": 3,
}


def floor(name: str) -> int:
    prefixes = [p for p in FLOORS if name == p or name.startswith(p + ".")]
    assert prefixes, f"{name} has no floor in FLOORS: place it in the layer picture"
    return FLOORS[max(prefixes, key=len)]


def test_every_module_has_a_floor_and_imports_only_downwards():
    upward = [f"{name} (floor {floor(name)}) -> {target} (floor {floor(target)})"
              for name in project_modules() for target in sorted(direct_imports(name))
              if floor(target) > floor(name)]
    assert upward == []


def test_no_circles_between_modules_or_units():
    modules = {name: set(direct_imports(name)) for name in project_modules()}
    assert cycles(modules) == []
    units: dict[str, set[str]] = {}
    for name, targets in modules.items():
        units.setdefault(unit(name), set()).update(unit(t) for t in targets if unit(t) != unit(name))
    assert cycles(units) == []


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones():
    # evaluate loads its figures inside a function; diffusion/process.py names the config type only for checkers
    assert "radiodiff.evaluation.figures" in direct_imports("radiodiff.stages.evaluate")
    assert "radiodiff.config" not in direct_imports("radiodiff.diffusion.process")
    assert module_file("radiodiff.no_such_module") is None


# What asking a model for its kind of objective looks like: a condition on an objective's enum
# member, a type test of a process, or the old `.continuous` flag. Only radiodiff/diffusion/ may.
KIND_CHECK = re.compile(r"\b(if|elif|while)\b.*Prediction\.(KC|EPS|V|X0)\b|Prediction\.(KC|EPS|V|X0)\b.*\bif\b"
                        r"|isinstance\([^)]*(Discrete|Decoupled)Process|\.continuous\b")


def test_nothing_above_diffusion_branches_on_the_kind_of_objective():
    allowed = ("radiodiff/diffusion/",)
    sites = []
    for path in sorted([*(ROOT / "radiodiff").rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")]):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(allowed):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if KIND_CHECK.search(line.split("#")[0]):
                sites.append(f"{relative}:{number}: {line.strip()}")
    assert sites == []
    assert KIND_CHECK.search("if model.prediction is Prediction.KC:")  # the check can fail
    assert KIND_CHECK.search("x = 2 if isinstance(p, DecoupledProcess) else 1")


@pytest.mark.parametrize("module", ["radiodiff.config", "radiodiff.options", "radiodiff.artifacts.layout"])
def test_parsing_params_imports_no_torch(module):
    code = (f"import sys, {module}, radiodiff.config as c; c.load_params({str(ROOT / 'params.yaml')!r}); "
            "heavy = [m for m in ('torch', 'numpy', 'mlflow', 'prefect') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
