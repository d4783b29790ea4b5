"""The attack in each space: the one layer that pairs a space (pipeline/attack/spaces/) with the searches
that run in it and with what attack.zarr keeps of them (docs/architecture.md, "Layers").

One module per space, named as the space, each with a class ``WIRING`` (a :class:`~.base.Wiring`). The
`attack` stage writes the store through it and the analysis reads examples back through it; none of them
compares a space's name.
"""

from __future__ import annotations

import importlib

from pipeline.config import SPACES as NAMES

UNNAMED = "tensor"  # the space of an attack.zarr written before stores named theirs


def get(name: str) -> type:
    """The wiring of space `name` (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"unknown attack space {name!r} ({', '.join(NAMES)})")
    return importlib.import_module(f"{__name__}.{name}").WIRING


def name_of(attack) -> str:
    """The space an ``attack.zarr`` (an xarray Dataset or zarr group) was searched in."""
    return attack.attrs.get("space", UNNAMED)


def of(attack) -> type:
    """The wiring of the space an ``attack.zarr`` was searched in."""
    return get(name_of(attack))
