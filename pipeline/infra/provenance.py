"""What every run records of where it ran: the versions of Python and the libraries whose results it
depends on, and the pipeline's source commit (manifest.json, dataset.zarr, the tasks' version check)."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "numpy", "pandas", "pyarrow", "dask", "xarray", "zarr", "optuna", "submitit",
            "mimic-adversarial-pipeline")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def source_commit() -> str | None:
    """The git commit of the pipeline's source tree, when it is a checkout."""
    src = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def source_sha256() -> str:
    """sha256 over the pipeline package's code and data files (relative path and bytes): what a process runs,
    whether the package is a checkout, an installed wheel or an image's copy. A task and its driver run the
    same code exactly when theirs are equal, whatever commit either was built from."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()
