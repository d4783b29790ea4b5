"""What the wiring of a space says, and what a space with nothing to add inherits.

A wiring is the layer above one space (pipeline/attack/spaces/) and the searches: which searches follow the
L1 attack there (:meth:`Wiring.after_l1`), the examples attack.zarr keeps per target (`KINDS`), the variables
the space adds to the store with their CF text (:meth:`~Wiring.variables`, `KIND`, `EFFECT`), how a batch
writes them (:meth:`~Wiring.write`) and how the analysis reads an example back into the record
(:meth:`~Wiring.edited_values`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from pipeline.attack.core import KINDS, AttackResult
from pipeline.attack.spaces.base import Inputs, Space

if TYPE_CHECKING:  # annotations only: the libraries are imported by who opens the stores
    import xarray as xr
    import zarr

    from pipeline.config import AttackParams


class Wiring:
    """The attack in one space: its searches, what attack.zarr keeps of them, and how it is read back."""

    SPACE: ClassVar[type[Space]]
    KINDS: ClassVar[tuple[str, ...]] = KINDS  # the examples attack.zarr keeps per target, in order
    KIND: ClassVar[dict]  # CF attributes of attack.zarr's `kind`: what each kind is, in this space
    EFFECT: ClassVar[str]  # long_name of attack.zarr's `perturbation`
    CHECKS: ClassVar[bool] = False  # its examples edit recorded values that a hospital's checks see (§11)

    @classmethod
    def after_l1(cls, model: torch.nn.Module, result: AttackResult, inputs: Inputs, y: np.ndarray, rows: slice,
                 params: AttackParams):
        """The batch's examples after the L1 attack's `result` (what :meth:`write` takes): by default the L1
        attack's own."""
        return result

    @classmethod
    def variables(cls, n: int, n_time: int, n_feat: int, empty) -> dict:
        """The variables this space adds to attack.zarr: {name: (dims, empty array, CF attrs)};
        `empty(shape, dtype, fill)` makes a lazy array chunked as the store."""
        return {}

    @classmethod
    def write(cls, space: Space, store: zarr.Group, batch, b0: int, b1: int) -> AttackResult:
        """Write this space's own variables of `batch` (what :meth:`after_l1` returned) into rows b0…b1 of the
        store; return the result whose perturbation is the change of the model's input."""
        return batch

    @staticmethod
    def edited_values(attack: xr.Dataset, data: xr.Dataset, kind: str, rows: np.ndarray) -> np.ndarray:
        """The recorded values (clinical units, float64) of targets `rows` with their example of `kind`
        written into the record."""
        raise NotImplementedError
