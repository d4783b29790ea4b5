"""The record space: the attack edits recorded values, and the model sees what `prepare` derives from the
edited record (docs/methods.md §10). After the L1 attack, the one-edit scan and the fewest-edit search
(pipeline/attack/one_edit.py, fewest_edits.py; wired by pipeline/attack/wiring/record.py) look for the
sparsest example; all three use this space's box and its MIN_MARGIN."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.attack.spaces.base import Space
from pipeline.data.record import Transform, width
from pipeline.errors import InputError
from pipeline.features import FEATURES
from pipeline.options import ConfigError

# an example counts only with a margin above this: best examples sit at the decision boundary, and one
# must stay flipped when its record is re-derived elsewhere (another batch size and LSTM kernel, events
# re-read from CSV text)
MIN_MARGIN = 1e-3
# an edited value stays this share of the feature's range inside it: float32 rounding of the edit must
# never carry it onto the excluded lower end or past the upper one
EDGE = 1e-6


def plausible_edits(value: np.ndarray, mask: np.ndarray, stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per recorded cell, the range of δ (scaled units) that keeps v + δ·(p95 − p5) plausible — inside the
    feature's range filter lo < v ≤ hi, where prepare keeps it; 0 … 0 where nothing was recorded."""
    lo = np.array([f.lo for f in FEATURES])
    hi = np.array([f.hi for f in FEATURES])
    edge = EDGE * (hi - lo)
    v = np.nan_to_num(value)
    w = width(stats)
    lower = np.where(mask, np.minimum(((lo + edge) - v) / w, 0.0), 0.0)
    upper = np.where(mask, np.maximum(((hi - edge) - v) / w, 0.0), 0.0)
    return lower, upper


class RecordSpace(Space):
    """The variable δ edits the recorded values (in each feature's scaled units, so that λ weighs every
    feature alike; recorded cells only). The model sees what `transform` derives from the edited record
    v + δ·width (clinical units, float64). `lower` ≤ δ ≤ `upper` keeps every edited value plausible
    (inside the feature's range filter, where `prepare` keeps it)."""

    name = "record"
    MIN_MARGIN = MIN_MARGIN

    def __init__(self, value: torch.Tensor, width: torch.Tensor, recorded: torch.Tensor, lower: torch.Tensor,
                 upper: torch.Tensor, transform: torch.nn.Module):
        self.value, self.width, self.transform = value, width, transform
        self.allowed = recorded.to(lower.dtype)
        self.lower, self.upper = lower * self.allowed, upper * self.allowed

    @classmethod
    def check(cls, params) -> None:
        if params.observed_only:
            raise ConfigError("[attack] observed_only = true is a tensor-space option: the record space edits "
                              "recorded values only; set attack.space = \"tensor\" to use it")

    @classmethod
    def check_dataset(cls, ds, path) -> None:
        if "value" not in ds:
            raise InputError(f"{path} holds no recorded values (made before the record was kept): run "
                             "`prepare --force` for attack.space = \"record\", or use attack.space=tensor")

    @classmethod
    def build(cls, inputs, params, device, rows) -> RecordSpace:
        mask, value = inputs.mask[rows], inputs.value[rows]
        lower, upper = plausible_edits(value, mask, inputs.stats)
        as_tensor = lambda a, dtype=torch.float32: torch.as_tensor(np.array(a), dtype=dtype, device=device)  # noqa: E731
        return cls(as_tensor(np.where(mask, value, 0.0), torch.float64), as_tensor(width(inputs.stats), torch.float64),
                   torch.from_numpy(mask).to(device), as_tensor(lower), as_tensor(upper),
                   Transform(mask, inputs.stats, device))

    def input(self, delta: torch.Tensor) -> torch.Tensor:
        return self.transform(self.value + delta.double() * self.width)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(delta, self.lower), self.upper) * self.allowed

    def score(self, delta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The fewest edited values, then the smallest L1 of the edit."""
        return (delta != 0).sum(dim=(1, 2)), delta.abs().sum(dim=(1, 2))

    def effect(self, edit: torch.Tensor) -> torch.Tensor:
        """(n, kind, time, feature): how each edit of the record changes the model's input, T(u + δ) − T(u)
        (exactly 0 in every cell the edit does not reach)."""
        clean = self.input(torch.zeros_like(self.lower))
        return torch.stack([self.input(edit[:, k]) - clean for k in range(edit.shape[1])], dim=1)


SPACE = RecordSpace
