"""The lock files (make lock): requirements/cpu.txt for make setup and CI, requirements/cuda.txt for
the container. Both pin the Makefile's torch, agree on every package they share, satisfy
pyproject.toml, and this venv (made by make setup) holds exactly the CPU lock."""

import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipeline.infra.versions import lock_mismatches

ROOT = Path(__file__).resolve().parent.parent
CPU, CUDA = ROOT / "requirements" / "cpu.txt", ROOT / "requirements" / "cuda.txt"
# only the CUDA build of torch needs these (its CUDA runtime, cuDNN, NCCL, … and triton)
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")


def pins(lock: Path) -> dict[str, str]:
    found = {}
    for line in lock.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            pin = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
            assert pin, f"{lock.name}: {line!r} is not an exact pin"
            found[canonicalize_name(pin[1])] = pin[2]
    return found


def test_both_locks_pin_the_makefiles_torch():
    torch = re.search(r"^TORCH \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert torch
    assert pins(CPU)["torch"] == pins(CUDA)["torch"] == torch[1]


def test_the_locks_differ_only_by_the_cuda_wheels():
    cpu, cuda = pins(CPU), pins(CUDA)
    assert set(cpu) <= set(cuda)
    extra = set(cuda) - set(cpu)
    assert extra and all(CUDA_ONLY.match(name) for name in extra), sorted(extra)
    assert {name: v for name, v in cuda.items() if name in cpu} == cpu, "the two locks hold other versions"


@pytest.mark.parametrize("lock", [CPU, CUDA], ids=["cpu", "cuda"])
def test_the_lock_satisfies_pyproject_with_the_postgres_and_dev_extras(lock):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    locked = pins(lock)
    for line in project["dependencies"] + optional["postgres"] + optional["dev"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in locked, f"{lock.name} lacks {req.name}"
        assert req.specifier.contains(Version(locked[name]), prereleases=True), \
            f"{lock.name}: {name}=={locked[name]} does not satisfy {line!r}"
    assert "psycopg2-binary" in locked  # the container and make setup are for the cluster too


@pytest.mark.skipif(os.environ.get("PIPELINE_FLOORS") == "1", reason="the floors job installs the lowest versions")
def test_this_venv_holds_the_cpu_lock():
    """make setup installs requirements/cpu.txt; a package installed by hand at another version shows here."""
    assert lock_mismatches(CPU) == []
