"""The versions a task must share with the driver that started it, and the check at task start.

A Slurm array task runs the Python of the profile (``python = "apptainer exec … pipeline.sif
python"``, a module, another venv), which need not be the driver's: an image built months ago, a
user's ``~/.local`` packages, another torch. Its results would silently differ from what the
driver and the tests assume. :class:`pipeline.infra.executor.CheckpointableTask` therefore records
:func:`runtime_versions` when the driver creates it and calls :func:`check_versions` first thing in
the task, which fails with every difference listed.

What must match: Python's major.minor, the pipeline package's version and its code (the sha256 of the
package's files, :func:`~pipeline.infra.provenance.source_sha256`: the commit a container was built from
may be older when the package did not change since; the commit, from a git checkout or
``PIPELINE_SOURCE_COMMIT`` set by the container from its build, is named beside a difference), and the
libraries of :data:`pipeline.infra.provenance.PACKAGES` (torch, numpy, pandas, pyarrow, dask, xarray, zarr,
optuna, submitit). Local version labels are ignored: ``2.13.0+cpu`` on a login node
equals ``2.13.0`` (the CUDA build) in the container.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from pipeline.infra.provenance import package_versions, source_commit, source_sha256

# the container sets it from its build argument (containers/pipeline.def, make container)
COMMIT_ENV = "PIPELINE_SOURCE_COMMIT"
UNKNOWN = {"", "unknown", "none"}

HOW_TO_FIX = ("run the tasks with the driver's environment: rebuild the container from the lock file "
              "(make container) or set the Slurm profile's python to the driver's interpreter")


class VersionMismatch(RuntimeError):
    """A task runs other versions than its driver; the message lists each difference."""


def commit() -> str | None:
    """The source commit of the running pipeline: its git checkout's HEAD, else the container's label."""
    found = source_commit() or os.environ.get(COMMIT_ENV, "").strip()
    return None if found.lower() in UNKNOWN else found


def runtime_versions() -> dict[str, str]:
    """What a task must share with its driver: name → version (``commit`` only when known)."""
    versions = package_versions()  # python + provenance.PACKAGES, "not installed" where absent
    versions["python"] = ".".join(platform.python_version_tuple()[:2])
    for name, version in versions.items():
        versions[name] = version.split("+", 1)[0]  # the build (+cpu, +cu126) may differ
    versions["source"] = source_sha256()
    found = commit()
    if found:
        versions["commit"] = found
    return versions


def mismatches(driver: dict[str, str], task: dict[str, str]) -> list[str]:
    """One line per difference. The code is compared by its content (`source`), not by the commit it was
    built from: an image built from an earlier commit with the same package runs the same code, and a
    checkout with uncommitted changes does not. The commits are named beside a differing source."""
    lines = []
    for name in sorted((set(driver) | set(task)) - {"commit"}):
        mine, theirs = task.get(name, "not recorded"), driver.get(name, "not recorded")
        if name == "source" and mine != theirs:
            lines.append(f"pipeline source (sha256 of its files): task {mine[:12]} (commit "
                         f"{task.get('commit', 'unknown')}) but driver {theirs[:12]} (commit "
                         f"{driver.get('commit', 'unknown')})")
            continue
        if mine != theirs:
            lines.append(f"{name}: task {mine} but driver {theirs}")
    return lines


def check_versions(driver: dict[str, str], task: dict[str, str] | None = None) -> None:
    """Raise :class:`VersionMismatch` unless this process (or `task`) runs the driver's versions."""
    task = runtime_versions() if task is None else task
    diff = mismatches(driver, task)
    if diff:
        raise VersionMismatch(
            f"this task ({sys.executable} on {platform.node()}) runs other versions than the driver that "
            f"submitted it ({len(diff)} difference{'s' if len(diff) > 1 else ''}):\n  " + "\n  ".join(diff)
            + f"\n{HOW_TO_FIX}")


PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def lock_mismatches(lock: Path | str) -> list[str]:
    """One line per pin of a lock file (``name==version`` lines, as ``make lock`` writes them) that
    this interpreter does not have installed at that version (build labels such as +cpu aside)."""
    lines = []
    for line in Path(lock).read_text().splitlines():
        pin = PIN.match(line)
        if not pin:
            continue
        name, locked = pin.groups()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            lines.append(f"{name}: not installed but locked {locked}")
            continue
        if installed.split("+", 1)[0] != locked.split("+", 1)[0]:
            lines.append(f"{name}: installed {installed} but locked {locked}")
    return lines


def main(argv: list[str]) -> int:
    """``python -m pipeline.infra.versions``: print the versions a task must share with its driver;
    ``python -m pipeline.infra.versions check-lock FILE``: exit 1 unless every pin of FILE is installed."""
    if argv[:1] == ["check-lock"] and len(argv) == 2:
        diff = lock_mismatches(argv[1])
        if diff:
            print(f"{len(diff)} package(s) differ from {argv[1]}:\n  " + "\n  ".join(diff), file=sys.stderr)
            return 1
        print(f"every package as locked in {argv[1]}")
        return 0
    if argv:
        print("usage: python -m pipeline.infra.versions [check-lock LOCKFILE]", file=sys.stderr)
        return 2
    print(json.dumps(runtime_versions(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
