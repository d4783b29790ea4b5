"""The tensor space (Sun et al. 2018): the attack changes the model's input x itself, cell by cell."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.attack.spaces.base import Space
from pipeline.data.record import feature_stats, width


class TensorSpace(Space):
    """The variable P changes the model's input x (n, time, feature) in [0, 1]; x + P stays in [0, 1]
    (`allowed`: only these cells, e.g. the recorded ones for ``observed_only``)."""

    name = "tensor"
    MIN_MARGIN = 0.0  # any flip counts, as in Sun et al.
    KIND = {"long_name": "example kind: first = first iterate that flipped the prediction, best = flipped "
                         "iterate with the smallest L1 (ties: the larger margin)"}
    EFFECT = "adversarial perturbation P of the scaled input x"
    REPORTS_IMPUTED = True
    PARAGRAPH = (
        "**What the attack changes: the model's input (Sun et al.'s attack).** An example here changes cells "
        "of the 48 × 19 input directly, including hours that no one measured and `prepare` filled in. Such a "
        "change is not an edit anyone could make to the record; the share of changed cells that were never "
        "recorded, and how many examples still flip when only their changes of recorded values are kept, "
        "are given below. `attack.space = \"record\"` searches edits of the record instead.")
    KIND_TEXT = ("*first* is the first iterate that flipped the prediction, *best* the flipped iterate with the "
                 "smallest L1 (over the whole budget and every run of the λ search).")
    REALIZABLE_TEXT = "still flip with only their changes of recorded values kept and the rest re-derived"

    def __init__(self, x: torch.Tensor, allowed: torch.Tensor | None = None):
        self.x, self.allowed = x, allowed
        self.lower, self.upper = -x, 1.0 - x

    @classmethod
    def of(cls, x: torch.Tensor, mask: torch.Tensor | None, observed_only: bool) -> TensorSpace:
        """The space of input x, restricted to the cells of `mask` with ``observed_only``."""
        return cls(x, mask.to(x.device).float() if (observed_only and mask is not None) else None)

    @classmethod
    def build(cls, inputs, params, device, rows) -> TensorSpace:
        return cls.of(torch.from_numpy(inputs.x[rows]).to(device), torch.from_numpy(inputs.mask[rows]),
                      params.observed_only)

    def input(self, p: torch.Tensor) -> torch.Tensor:
        return self.x + p

    def project(self, p: torch.Tensor) -> torch.Tensor:
        p = torch.minimum(torch.maximum(p, self.lower), self.upper)
        return p * self.allowed if self.allowed is not None else p

    @staticmethod
    def edited_values(attack, data, kind, rows):
        """Each changed recorded cell set to the clinical value of its changed input x + P; a change of
        an imputed cell is no edit of the record, so those cells keep their (absent) value."""
        index = attack.dataset_index.values[rows]
        value, mask = data["value"].values[index], data["mask"].values[index]
        stats = feature_stats(data)
        p = attack.perturbation.sel(kind=kind).values[rows]
        after = (data.x.values[index] + p).astype(np.float64) * width(stats) + stats["p5"]
        return np.where(mask & (p != 0), after, value)


SPACE = TensorSpace
