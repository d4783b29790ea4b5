"""Virtual environments of their own for the MEDS tools the tests run as a user runs them (the MIMIC-IV ETL,
ACES): their dependencies (polars, hydra, their own pin of `meds`) need not agree with the project's.

Each is made once per machine, in PIPELINE_TOOL_VENVS (default ~/.cache/mimic-pipeline/tool-venvs), under a
name that includes a hash of its requirements, so that a changed pin makes a new one. Where it cannot be made
(no network on a laptop), the test skips with the reason, or fails when PIPELINE_REQUIRE_TOOLS=1 (.ci/run).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("PIPELINE_TOOL_VENVS", Path.home() / ".cache" / "mimic-pipeline" / "tool-venvs"))
REQUIRE_TOOLS = os.environ.get("PIPELINE_REQUIRE_TOOLS") == "1"


def tool_missing(reason: str) -> None:
    if REQUIRE_TOOLS:
        pytest.fail(f"{reason} (PIPELINE_REQUIRE_TOOLS=1: the MEDS tools must be installable)")
    pytest.skip(reason)


def tool_venv(name: str, requirements: list[str]) -> Path:
    """The bin/ folder of the venv `name` with `requirements` installed (made on first use, under a lock so
    that two pytest workers make it once); skips or fails the test (tool_missing) when pip cannot install."""
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    venv = CACHE / f"{name}-{key}"
    done = venv / ".installed"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
            pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *requirements],
                                 capture_output=True, text=True) if made.returncode == 0 else made
            if pip.returncode != 0:
                tail = (pip.stderr or pip.stdout).strip().splitlines()[-3:]
                tool_missing(f"cannot install {' '.join(requirements)} for {name}: {' | '.join(tail)}")
            done.write_text("\n".join(requirements) + "\n")
    return venv / "bin"
