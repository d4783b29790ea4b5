"""The attack's search spaces: what an adversarial example changes (docs/methods.md §3, §10), as geometry.

One module per space, each with a class ``SPACE`` (a :class:`~.base.Space`): the search variable and its
box, the margin a flip must clear and which example is better. What attack.zarr keeps of a space's
examples and which searches run in it are its wiring's (pipeline/attack/wiring/, a module of the same
name); what the report says of it, pipeline/susceptibility/space_text.py.

A new space is a module here, one in wiring/, its text in the report and its name in
``pipeline.config.SPACES`` (config, below the attack, offers the names as the choices of [attack] space).
"""

from __future__ import annotations

import importlib

from pipeline.config import SPACES as NAMES

DEFAULT = NAMES[0]


def get(name: str) -> type:
    """The class of space `name` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"unknown attack space {name!r} ({', '.join(NAMES)})")
    return importlib.import_module(f"{__name__}.{name}").SPACE


def check(params) -> None:
    """ConfigError for [attack] keys that do not go together: the algorithm's (AttackParams.check), then
    those the chosen space cannot take."""
    params.check()
    get(params.space).check(params)

