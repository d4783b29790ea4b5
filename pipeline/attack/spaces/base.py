"""What every attack space defines: geometry only.

A space is built per batch of targets (:meth:`Space.build`). The searches (pipeline/attack/l1.py,
one_edit.py, fewest_edits.py) call :meth:`Space.input`, :meth:`Space.project`, :meth:`Space.score`, the box
(`lower`, `upper`) and `MIN_MARGIN`. Which searches run in a space, what attack.zarr keeps of them and how
the analysis reads an example back are the space's wiring (pipeline/attack/wiring/); what the report says
of it is the report's (pipeline/susceptibility/space_text.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch

if TYPE_CHECKING:  # annotations only: the libraries are imported by who opens the stores
    import xarray as xr

    from pipeline.config import AttackParams


class Inputs(Protocol):
    """What a space is built from: dataset.zarr's arrays of the targets (pipeline.attack.targets.TargetInputs)."""

    x: np.ndarray  # float32 (n, time, feature)
    mask: np.ndarray  # bool (n, time, feature)
    value: np.ndarray | None  # float64 (n, time, feature), NaN where not recorded
    stats: dict[str, np.ndarray]
    checks: Any  # pipeline.checks.limits.Limits or None: the record space's check-aware searches use them


class Space:
    """A search space of the attack: the variable the attack moves, x + P or an edit of the record."""

    name: ClassVar[str]
    MIN_MARGIN: ClassVar[float] = 0.0  # an iterate counts as flipped when its margin Z_o − Z_t exceeds this

    lower: torch.Tensor  # the box of the variable, (n, time, feature)
    upper: torch.Tensor

    @classmethod
    def check(cls, params: AttackParams) -> None:
        """Raise ConfigError for an [attack] key this space cannot take."""

    @classmethod
    def check_dataset(cls, ds: xr.Dataset, path: object) -> None:
        """Raise InputError when dataset.zarr (at `path`) lacks what this space reads."""

    @classmethod
    def build(cls, inputs: Inputs, params: AttackParams, device: torch.device, rows: slice) -> Space:
        """The space of targets `rows` of `inputs`."""
        raise NotImplementedError

    def input(self, p: torch.Tensor) -> torch.Tensor:
        """The model's input at the variable `p`."""
        raise NotImplementedError

    def project(self, p: torch.Tensor) -> torch.Tensor:
        """`p` moved into the box (and onto the cells the space may change)."""
        raise NotImplementedError

    def score(self, p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per sample, the keys that rank flipped iterates, compared in order (smaller is better); the
        attack breaks a tie of all of them by the larger margin. Default: the L1 of the variable."""
        return (p.abs().sum(dim=(1, 2)),)
