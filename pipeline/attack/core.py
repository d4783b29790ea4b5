"""The bottom layer of the attack package: what every search shares (docs/architecture.md, "The attack in
layers"). It imports no other module of the package.

- the margin Z_o − Z_t of a prediction (positive: flipped away from the target class) and a counter of
  the model's margins over batches of inputs (`Margins`);
- the result type of a search (`AttackResult`) and its two kinds of example (FIRST, BEST);
- the one rule for "best" (`rank_key`, `ranks_before`): of two flipped examples, the one whose space
  keys (`Space.score`: the L1 of the variable in the tensor space; the number of edited values, then the
  L1 of the edit, in the record space) come first in order, then the one with the larger margin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

FIRST, BEST = 0, 1  # the L1 attack's two examples per target
KINDS = ("first", "best")


def margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Z_o − Z_t per sample: positive when the prediction is flipped away from the target class."""
    z_t = logits.gather(1, target[:, None])[:, 0]
    z_o = logits.gather(1, (1 - target)[:, None])[:, 0]
    return z_o - z_t


class Margins:
    """Z_o − Z_t of the model for batches of inputs x (n, time, feature), counting the records passed."""

    def __init__(self, model: torch.nn.Module, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self.device = next(model.parameters()).device
        self.passes = 0

    @torch.no_grad()
    def __call__(self, x: np.ndarray, y: int | np.ndarray) -> np.ndarray:
        """`y`: the class of every input, or one per input."""
        y = np.broadcast_to(np.asarray(y, dtype=np.int64), (len(x),))
        out = []
        for i in range(0, len(x), self.batch_size):
            chunk = torch.from_numpy(x[i:i + self.batch_size]).to(self.device)
            target = torch.from_numpy(y[i:i + self.batch_size].copy()).to(self.device)
            out.append(margin(self.model(chunk), target).double().cpu().numpy())
        self.passes += len(x)
        return np.concatenate(out) if out else np.zeros(0)

    def stream(self, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """The margins of the blocks' inputs (x, y per input) in order, as `self` gives them for the blocks
        concatenated: the model sees the very same batches (so the very same numbers), but only about one
        batch and one block are ever held, not every input a search asks at once."""
        out, xs, ys, held = [], [], [], 0
        for x, y in blocks:
            xs.append(x)
            ys.append(np.broadcast_to(np.asarray(y, dtype=np.int64), (len(x),)))
            held += len(x)
            if held >= self.batch_size:
                x, y = np.concatenate(xs), np.concatenate(ys)
                whole = held - held % self.batch_size
                out.append(self(x[:whole], y[:whole]))
                xs, ys, held = [x[whole:].copy()], [y[whole:].copy()], held - whole
        if held:
            out.append(self(np.concatenate(xs), np.concatenate(ys)))
        return np.concatenate(out) if out else np.zeros(0)


@dataclass
class AttackResult:
    """Per sample and kind (FIRST, BEST, and what a space adds): the example and where and how it was found."""

    perturbation: torch.Tensor  # (n, kind, time, feature)
    found: torch.Tensor  # (n, kind) bool
    iteration: torch.Tensor  # (n, kind) int: number of updates applied to reach it; -1 if not found
    margin: torch.Tensor  # (n, kind) Z_o − Z_t at that iterate (> 0: flipped); NaN if not found
    lam: torch.Tensor  # (n, kind) the λ of the run that found it (differs from the config's with lam_search)
    logits: torch.Tensor  # (n, kind, 2) the model's logits at the example

    @property
    def l1(self) -> torch.Tensor:
        """(n, kind) ‖P‖₁ of each example (0 where none was found)."""
        return self.perturbation.abs().sum(dim=(2, 3))


def rank_key(keys: tuple, margin_: float) -> tuple:
    """The order of "best" for one example: its space keys (smaller first), then the larger margin."""
    return (*keys, -margin_)


def ranks_before(score: tuple[torch.Tensor, ...], than: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, whether the space keys `score` come before `than` in the order of :func:`rank_key`, and
    whether they are equal (then the larger margin decides)."""
    before = torch.zeros_like(score[0], dtype=torch.bool)
    equal = torch.ones_like(before)
    for a, b in zip(score, than, strict=True):
        before |= equal & (a < b)
        equal &= a == b
    return before, equal
