"""The lower bounds of pyproject.toml are tested: .ci/floors.sh pins each one exactly (derived by
.ci/floor_pins.py) in a fresh venv and runs the tests there; psycopg2 comes only with [postgres]."""

import importlib.util
import os
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

ROOT = Path(__file__).resolve().parent.parent
FLOORS = os.environ.get("PIPELINE_FLOORS") == "1"  # set by .ci/floors.sh

_spec = importlib.util.spec_from_file_location("floor_pins", ROOT / ".ci" / "floor_pins.py")
floor_pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(floor_pins)


def test_every_dependency_has_one_floor():
    pins = floor_pins.floor_pins(["postgres", "dev"])
    assert len(pins) == len(floor_pins.requirements(["postgres", "dev"]))
    assert all(re.fullmatch(r"[\w.-]+(\[[\w,]+\])?==[\w.]+", p) for p in pins), pins
    assert [p.split("==")[0] for p in floor_pins.floor_pins(["--build-system"])] == ["setuptools"]


def test_pins_keep_extras_and_markers_and_refuse_a_dependency_without_floor(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["dask[dataframe]>=2024.8.0", '
                         '"tomli>=2.0; python_version < \'3.11\'"]\n'
                         '[project.optional-dependencies]\nx = ["zarr>=3.0.8,<4"]\ny = ["numpy"]\n')
    assert floor_pins.floor_pins(["x"], pyproject) == [
        "dask[dataframe]==2024.8.0", 'tomli==2.0; python_version < "3.11"', "zarr==3.0.8"]
    with pytest.raises(SystemExit, match="'numpy'"):
        floor_pins.floor_pins(["y"], pyproject)
    with pytest.raises(SystemExit, match="unknown extra"):
        floor_pins.floor_pins(["z"], pyproject)


def test_psycopg2_comes_only_with_the_postgres_extra():
    core = {Requirement(r).name for r in floor_pins.requirements([])}
    assert not any(name.startswith("psycopg") for name in core)
    assert [Requirement(r).name for r in floor_pins.requirements(["postgres"]) if r not in
            floor_pins.requirements([])] == ["psycopg2-binary"]


def test_ci_runs_the_floors_job_after_the_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "bash .ci/floors.sh" in ci
    assert ci.index("make test") < ci.index("bash .ci/floors.sh")


@pytest.mark.skipif(not FLOORS, reason="only in the floors job (.ci/floors.sh)")
def test_the_floors_job_runs_on_the_floors():
    for pin in floor_pins.floor_pins(["dev"]):
        req = Requirement(pin)
        installed = metadata.version(req.name).split("+")[0]
        assert req.specifier.contains(installed), f"{req.name} {installed} installed, floor {req.specifier}"
    with pytest.raises(ModuleNotFoundError):
        import psycopg2  # noqa: F401


# ---- which tests the floors job runs: those marked `thirdparty` ----------------------------------------

MAP_ROW = re.compile(r"^\| (.+?) \| (.+?) \|$", re.M)
BACKTICKED = re.compile(r"`([^`]+)`")


def third_party_imports(module: Path) -> set[str]:
    """The top-level packages `module` imports that are neither the standard library's nor this project's."""
    import ast
    import sys

    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"pipeline", "__future__"}


def test_every_part_that_calls_a_library_has_a_test_the_floors_job_runs():
    """The floors job runs the tests marked `thirdparty` (the lowest versions can only differ where the
    package calls a library): each row of the map of the tests (docs/architecture.md) whose package part
    imports a third-party package names at least one test file carrying the mark."""
    text = (ROOT / "docs/architecture.md").read_text()
    table = text.split("## Where the tests are", 1)[1].split("\n## ", 1)[0]
    unmarked = []
    for left, right in MAP_ROW.findall(table):
        parts = [ROOT / p for p in BACKTICKED.findall(left) if p.startswith("pipeline/")]
        modules = [m for p in parts for m in ([p] if p.suffix == ".py" else sorted(p.rglob("*.py")))]
        if not any(m.is_file() and third_party_imports(m) for m in modules):
            continue
        tests = [ROOT / t for t in BACKTICKED.findall(right) if t.startswith("tests/")]
        if not any(re.search(r"^pytestmark = .*pytest\.mark\.thirdparty", t.read_text(), re.M) for t in tests):
            unmarked.append(left)
    assert not unmarked, f"no test marked thirdparty for: {unmarked}"
