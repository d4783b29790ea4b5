"""What every attack space defines, and what a space that adds nothing inherits.

A space is built per batch of targets (:meth:`Space.build`). The searches (pipeline/attack/l1.py,
one_edit.py, fewest_edits.py) only call :meth:`Space.input`, :meth:`Space.project`, :meth:`Space.score`,
`lower` and `MIN_MARGIN`; the `attack` stage (pipeline/attack/shards.py) :meth:`~Space.variables` and
:meth:`~Space.write`; the analysis the class attributes and :meth:`~Space.edited_values`. Which searches
run in a space after the L1 attack is not the space's business: pipeline/attack/searches.py wires them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import torch

from pipeline.attack.core import KINDS, AttackResult

if TYPE_CHECKING:  # annotations only: the libraries are imported by who opens the stores
    import xarray as xr
    import zarr

    from pipeline.config import AttackParams


class Inputs(Protocol):
    """What a space is built from: dataset.zarr's arrays of the targets (pipeline.attack.targets.TargetInputs)."""

    x: np.ndarray  # float32 (n, time, feature)
    mask: np.ndarray  # bool (n, time, feature)
    value: np.ndarray | None  # float64 (n, time, feature), NaN where not recorded
    stats: dict[str, np.ndarray]


class Space:
    """A search space of the attack: the variable the attack moves, x + P or an edit of the record."""

    name: ClassVar[str]
    MIN_MARGIN: ClassVar[float] = 0.0  # an iterate counts as flipped when its margin Z_o − Z_t exceeds this
    KINDS: ClassVar[tuple[str, ...]] = KINDS  # the examples attack.zarr keeps per target, in order
    KIND: ClassVar[dict]  # CF attributes of attack.zarr's `kind`: what each kind is, in this space
    EFFECT: ClassVar[str]  # long_name of attack.zarr's `perturbation`
    READS_RECORD: ClassVar[bool] = False  # needs dataset.zarr's recorded values
    EDITS_RECORD: ClassVar[bool] = False  # examples are edits of the record: the report's edit tables
    REPORTS_IMPUTED: ClassVar[bool] = False  # the report gives the share of changed cells never recorded
    PARAGRAPH: ClassVar[str]  # the report's "what the attack changes"
    KIND_TEXT: ClassVar[str]  # the report's sentence on the kinds of example
    REALIZABLE_TEXT: ClassVar[str]  # "n of m examples …": what the realizability check shows in this space

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

    @classmethod
    def variables(cls, n: int, n_time: int, n_feat: int, empty) -> dict:
        """The variables this space adds to attack.zarr: {name: (dims, empty array, CF attrs)};
        `empty(shape, dtype, fill)` makes a lazy array chunked as the store."""
        return {}

    def write(self, store: zarr.Group, batch, b0: int, b1: int) -> AttackResult:
        """Write this space's own variables of `batch` (what pipeline/attack/searches.py returned) into rows
        b0…b1 of the store; return the result whose perturbation is the change of the model's input."""
        return batch

    @staticmethod
    def edited_values(attack: xr.Dataset, data: xr.Dataset, kind: str, rows: np.ndarray) -> np.ndarray:
        """The recorded values (clinical units, float64) of targets `rows` with their example of `kind`
        written into the record."""
        raise NotImplementedError
