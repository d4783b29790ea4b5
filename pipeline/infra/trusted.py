"""Code the pipeline imports by name: only a factory this command's config names, and never from a run
directory (docs/reliability.md, trust model; docs/methods.md §2.2).

A run directory may be writable by others (a shared project folder). Nothing read from it — model.json, a
marker — chooses code to import, and no module is imported from a file inside it: ``python -m pipeline``
started from inside the run directory puts it first on ``sys.path``, where a planted ``evil.py`` (or a
``numpy.py``) would shadow what the pipeline imports next.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import InputError


def inside(path: str | Path, folder: Path) -> bool:
    """`path` is `folder` or lies in it (both resolved: a symlink does not hide it)."""
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # unresolvable (a loop): not a place anything is imported from
        return False


def leave_run_dir(run_dir: Path) -> None:
    """Drop the run directory and anything in it from ``sys.path`` (``''`` is the working directory), so
    that no later import — a stage's modules are imported when it runs — can come from it."""
    sys.path[:] = [p for p in sys.path if not inside(p or os.getcwd(), run_dir)]


def factory(spec: str, run_dir: Path) -> Callable:
    """The function ``package.module:function`` names, imported from the Python path; refused, before any of
    its code runs, when its package lies in the run directory."""
    where = f"[model] external = {spec!r}"
    module_name, _, name = spec.partition(":")
    top = module_name.split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError) as e:
        raise InputError(f"{where}: cannot import the factory ({e})") from None
    if found is None:
        raise InputError(f"{where}: cannot import the factory (no module named {top!r} outside the run "
                         f"directory); install it where this runs")
    places = [found.origin, *(found.submodule_search_locations or [])]
    planted = next((p for p in places if p and inside(p, run_dir)), None)
    if planted:
        raise InputError(f"{where}: {planted} lies in the run directory {run_dir}; code is never imported from a "
                         "run directory (install the module elsewhere)")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"{where}: cannot import the factory ({e}); install it where this runs") from None
    if not callable(function):
        raise InputError(f"{where}: {name} is a {type(function).__name__}, not a function")
    return function
