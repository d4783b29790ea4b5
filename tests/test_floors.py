"""The lower bounds of pyproject.toml are tested: .ci/floors.sh pins each one exactly (derived by
.ci/floor_pins.py) in a fresh venv and runs the tests there; psycopg2 comes only with [postgres]."""

import importlib.util
import os
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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
