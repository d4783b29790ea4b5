"""Print the lower bounds of pyproject.toml as exact pins, one requirement a line.

    python .ci/floor_pins.py [EXTRA ...]        the dependencies (and those of the extras)
    python .ci/floor_pins.py --build-system     the build backend's requirements

The project's dependencies (and those of the extras named) each carry a ``>=`` floor; this turns
``"optuna>=4.9"`` into ``optuna==4.9``, keeping extras and markers, so that ``.ci/floors.sh``
installs and tests exactly the versions pyproject.toml promises to work. A dependency without a
``>=`` floor is an error: every floor must be one that CI tests.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def requirements(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    """The requirement strings of the package and of `extras` (or, for ``--build-system``, of the build)."""
    data = tomllib.loads(pyproject.read_text())
    if extras == ["--build-system"]:
        return list(data["build-system"]["requires"])
    project = data["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {unknown}; pyproject.toml has {sorted(optional)}")
    return list(project["dependencies"]) + [r for e in extras for r in optional[e]]


def floor_pins(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    """Each requirement pinned to its floor: ``name[extras]==floor; marker``."""
    pins = []
    for line in requirements(extras, pyproject):
        req = Requirement(line)
        floors = [s.version for s in req.specifier if s.operator in (">=", "==")]
        if len(floors) != 1:
            raise SystemExit(f"{line!r}: expected exactly one '>=' (or '==') bound, the tested floor")
        extra = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        marker = f"; {req.marker}" if req.marker else ""
        pins.append(f"{req.name}{extra}=={floors[0]}{marker}")
    return pins


if __name__ == "__main__":
    print("\n".join(floor_pins(sys.argv[1:])))
