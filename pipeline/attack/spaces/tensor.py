"""The tensor space (Sun et al. 2018): the attack changes the model's input x itself, cell by cell."""

from __future__ import annotations

import torch

from pipeline.attack.spaces.base import Space


class TensorSpace(Space):
    """The variable P changes the model's input x (n, time, feature) in [0, 1]; x + P stays in [0, 1]
    (`allowed`: only these cells, e.g. the recorded ones for ``observed_only``)."""

    name = "tensor"
    MIN_MARGIN = 0.0  # any flip counts, as in Sun et al.

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


SPACE = TensorSpace
