"""Logistic regression on the flattened input: the classical baseline (mimic3-benchmarks, YAIB).

One linear map of the hours × features values to 2 logits; their difference is the log-odds of death, linear in
every cell — so the attack's gradients, and the fewest edits, are exact and easy to read.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import ModelParams
from pipeline.features import FEATURES, WINDOW_HOURS


class MortalityLogReg(nn.Module):
    """x (batch, time, feature) float32 in [0, 1] → logits (batch, 2)."""

    NAME, LABEL = "logreg", "Logistic regression"
    KEYS = ()

    def __init__(self, params: ModelParams, n_features: int = len(FEATURES), n_time: int = WINDOW_HOURS):
        super().__init__()
        self.params = params
        self.linear = nn.Linear(n_time * n_features, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))
