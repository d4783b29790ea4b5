"""What can be checked of the Apptainer definition without Apptainer: the files it copies exist,
and its %runscript and %test commands work on this (host) install."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEF = ROOT / "containers" / "pipeline.def"


def sections() -> dict[str, str]:
    parts = re.split(r"^%(\w+)[ \t]*$", DEF.read_text(), flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def host_shell(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a section as the container would, with this venv's python first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euc", script, "section", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)


def test_header_uses_a_cuda_pytorch_base():
    header = DEF.read_text().split("%", 1)[0]
    assert re.search(r"^Bootstrap:\s*docker$", header, re.M)
    assert re.search(r"^From:\s*pytorch/pytorch:[\w.]+-cuda[\w.]+-cudnn\w+-runtime$", header, re.M)


def test_every_copied_file_exists():
    lines = [ln.split() for ln in sections()["files"].splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert lines
    for src, dest in lines:
        assert (ROOT / src).exists(), f"%files copies {src}, which is not in the repository"
        assert dest.startswith("/opt/pipeline/")
    # what %post installs must have been copied
    assert "/opt/pipeline/pyproject.toml" in {dest for _, dest in lines}
    assert "pip install --no-cache-dir /opt/pipeline" in sections()["post"]


def test_runscript_is_the_cli():
    out = host_shell(sections()["runscript"], "--help")
    assert out.returncode == 0, out.stderr
    assert "tune-attack" in out.stdout and "analyze" in out.stdout


def test_test_section_passes_on_the_host():
    out = host_shell(sections()["test"])
    assert out.returncode == 0, out.stderr
    assert "pipeline OK" in out.stdout
