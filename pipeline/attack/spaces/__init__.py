"""The attack's search spaces: what an adversarial example changes (docs/methods.md §3, §10).

One module per space, each with a class ``SPACE`` (a :class:`~.base.Space`) that owns everything that
differs between spaces: the search variable and its box, the margin a flip must clear, which example is
better, what the space adds to ``attack.zarr`` (and its CF attributes), and its paragraphs of the report.
The attack, the `attack` stage and the analysis ask the space; none of them compares its name.

A new space is a new module here and its name in ``pipeline.config.SPACES`` (config, below the attack,
offers the names as the choices of [attack] space).
"""

from __future__ import annotations

import importlib

from pipeline.config import SPACES as NAMES

DEFAULT = NAMES[0]
UNNAMED = "tensor"  # the space of an attack.zarr written before stores named theirs


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


def of(attack) -> type:
    """The class of the space an ``attack.zarr`` (an xarray Dataset or zarr group) was searched in."""
    return get(attack.attrs.get("space", UNNAMED))
