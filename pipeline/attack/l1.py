"""The L1 proximal adversarial attack (docs/methods.md §3; Sun et al. 2018, EAD of Chen et al. 2018).

For a correctly classified sample x (class t, other class o) it looks for a sparse, small
perturbation P that flips the model's prediction, minimizing per sample

    ℓ(P) = max(Z_t(x + P) − Z_o(x + P), −κ) + λ‖P‖₁        (‖·‖₁ over the hours × features cells)

by proximal gradient steps (ISTA): a gradient step on the hinge term alone, then the proximal
operator of λ‖·‖₁ plus the box — soft-thresholding, then projection so that x + P stays in [0, 1] —
optionally with FISTA momentum and (`observed_only`) only on cells that were measured.

The gradient step is plain (`sgd`: threshold η·λ) or adaptive (`adam`, `rmsprop`). An adaptive step
moves every cell by about η whatever its gradient, so its proximal step thresholds each cell in the
optimizer's own metric: η·λ / (√v̂ + ε), with v̂ the (bias-corrected, for Adam) running mean of the
squared gradient. At P = 0 a cell then starts to move only where the (averaged) gradient exceeds λ,
as with ISTA; a scalar threshold η·λ would let every cell through.

The batch loss is the *sum* of per-sample losses, so a sample's optimization does not depend on its
batch. It does not stop at the first success: it runs `max_iter` updates and keeps, per sample, the
**first** flipped iterate and the **best** one, whatever κ and λ: the flipped iterate that ranks first by
the space's rule (pipeline/attack/spaces/: the smallest L1 in the tensor space, the fewest edited values
in the record space), ties broken by the larger margin (the one rule, pipeline/attack/core.py).

>>> result = L1Attack(model, AttackParams(max_iter=100)).run(x, target, mask)   # doctest: +SKIP
>>> result.perturbation[:, BEST]                                                 # (batch, time, feature)
"""

from __future__ import annotations

import contextlib

import torch

from pipeline.attack.core import BEST, FIRST, AttackResult, margin, ranks_before
from pipeline.attack.spaces.base import Space
from pipeline.attack.spaces.tensor import TensorSpace
from pipeline.config import ATTACK_OPTIMIZERS, AttackParams

ADAM_BETAS, RMSPROP_ALPHA, EPS = (0.9, 0.999), 0.99, 1e-8  # torch.optim's defaults


def soft_threshold(p: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The proximal operator of threshold·‖·‖₁: shrink every cell towards 0 by `threshold`."""
    return torch.sign(p) * torch.clamp(p.abs() - threshold, min=0.0)


def hinge(logits: torch.Tensor, target: torch.Tensor, kappa: float, offset: float = 0.0) -> torch.Tensor:
    """max(Z_t − Z_o + offset, −κ) per sample; negative once the margin Z_o − Z_t exceeds `offset`."""
    m = margin(logits, target)
    return torch.clamp(-(m - offset) if offset else -m, min=-kappa)


def split_budget(max_iter: int, runs: int) -> list[int]:
    """`max_iter` updates over `runs` runs, as evenly as possible (the later runs get the remainder)."""
    if runs > max_iter:
        raise ValueError(f"lam_search = {runs} runs cannot share max_iter = {max_iter} updates")
    return [max_iter // runs + (k >= runs - max_iter % runs) for k in range(runs)]


def next_lambda(lam: torch.Tensor, low: torch.Tensor, high: torch.Tensor, succeeded: torch.Tensor):
    """One step of the per-sample λ search: success → a larger λ (sparser), failure → a smaller one.

    The last λ that succeeded is the lower bound, the last that failed the upper; while a side is
    open, λ moves by a factor 10, then to the geometric midpoint of the bracket.
    """
    low = torch.where(succeeded, lam, low)
    high = torch.where(succeeded, high, lam)
    up = torch.where(torch.isinf(high), lam * 10, torch.sqrt(lam * high))
    down = torch.where(low > 0, torch.sqrt(low * lam), lam / 10)
    return torch.where(succeeded, up, down), low, high


class GradientStep:
    """The gradient step of one proximal update and the metric its threshold is taken in.

    ``step(grad)`` returns (direction, metric): the point moves by −η·direction and the L1 threshold
    of each cell is η·λ / metric (metric 1 for the plain step).
    """

    def __init__(self, name: str, like: torch.Tensor):
        if name not in ATTACK_OPTIMIZERS:
            raise ValueError(f"unknown attack optimizer {name!r} ({', '.join(ATTACK_OPTIMIZERS)})")
        self.name, self.t = name, 0
        self.m = torch.zeros_like(like) if name == "adam" else None
        self.v = torch.zeros_like(like) if name != "sgd" else None

    def step(self, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        if self.name == "sgd":
            return grad, 1.0
        self.t += 1
        if self.name == "rmsprop":
            self.v.mul_(RMSPROP_ALPHA).addcmul_(grad, grad, value=1 - RMSPROP_ALPHA)
            metric = self.v.sqrt().add_(EPS)
            return grad / metric, metric
        b1, b2 = ADAM_BETAS
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        metric = (self.v / (1 - b2 ** self.t)).sqrt_().add_(EPS)
        return self.m / (1 - b1 ** self.t) / metric, metric


ONEDNN_MAX_BATCH = 128  # on the CPU, batches from this size on run PyTorch's LSTM kernel


@contextlib.contextmanager
def _onednn(enabled: bool):
    """oneDNN (mkldnn) kernels on or off for the block (torch's flags() also warns about TF32 each call)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode with its weights frozen, ready for gradients with respect to its input."""
    model.eval()
    for weight in model.parameters():
        weight.requires_grad_(False)
    first = next(model.parameters(), None)
    if first is not None and first.device.type == "cuda":
        # cuDNN computes an RNN's backward pass only in training mode: put the recurrent layers in it
        # with their dropout off, which computes exactly what eval mode does
        for module in model.modules():
            if isinstance(module, torch.nn.RNNBase):
                module.dropout = 0.0
                module.train()
    return model


class L1Attack:
    """Batched attack of a frozen model (eval mode), on whatever device the model is on.

    `params`: the algorithm's keys of `[attack]` (an :class:`AttackConfig` is one too).
    """

    def __init__(self, model: torch.nn.Module, params: AttackParams):
        self.model = frozen(model)
        self.params = params
        self.device = next(model.parameters()).device

    def space(self, x: torch.Tensor | Space, mask: torch.Tensor | None = None) -> Space:
        """`x` itself if it is a space, else the tensor space of input x (n, time, feature)."""
        if isinstance(x, Space):
            return x
        return TensorSpace.of(x.to(self.device), mask, self.params.observed_only)

    def run(self, x: torch.Tensor | Space, target: torch.Tensor, mask: torch.Tensor | None = None) -> AttackResult:
        """x (n, time, feature) in [0, 1] — or a space to search in (pipeline/attack/spaces/);
        target (n,) the correct class; mask (n, time, feature) bool, used by ``observed_only``.

        With ``lam_search`` = R > 1 the budget of ``max_iter`` updates is split over R runs from P = 0.
        After each run a sample's λ goes up if the run found an example for it and down if not (×/÷ 10
        until bracketed, then the geometric midpoint, as EAD searches its constant). First and best are
        kept over all runs, and iterations count the whole budget. Best: the flipped iterate that ranks
        first by the space's :meth:`~pipeline.attack.spaces.base.Space.score`, then by the larger margin.
        """
        space = self.space(x, mask)
        target = target.to(self.device).long()
        n = len(target)
        book = _Book(n, space.lower.shape[1:], self.device, space)
        lam = torch.full((n,), self.params.lam, dtype=torch.float64, device=self.device)
        low, high = torch.zeros_like(lam), torch.full_like(lam, float("inf"))
        spent = 0
        for steps in split_budget(self.params.max_iter, self.params.lam_search):
            succeeded = torch.zeros(n, dtype=torch.bool, device=self.device)
            for it, pert, logits in self.iterates(space, target, lam=lam, max_iter=steps):
                if it == 0 and spent > 0:
                    continue  # P = 0 again: evaluated by the first run already
                succeeded |= book.record(spent + it, pert, logits, target, lam)
            spent += steps
            lam, low, high = next_lambda(lam, low, high, succeeded)
        return book.result()

    def iterates(self, x: torch.Tensor | Space, target: torch.Tensor, mask: torch.Tensor | None = None,
                 lam: torch.Tensor | None = None, max_iter: int | None = None):
        """Yield (k, P_k, Z(input(P_k))) for k = 0 … max_iter; P_0 = 0, P_k after k proximal updates.

        `lam` (n,): a λ per sample instead of the configured one; `max_iter`: another number of updates.
        """
        p = self.params
        space = self.space(x, mask)
        max_iter = p.max_iter if max_iter is None else max_iter
        n = len(target)
        lam = torch.full((n,), p.lam, dtype=torch.float64) if lam is None else lam
        like = space.lower
        lam_lr = (p.lr * lam).to(device=self.device, dtype=like.dtype)[:, None, None]  # η·λ per sample
        target = target.to(self.device).long()
        pert = torch.zeros_like(like)  # the iterate P_k
        point = pert.clone().requires_grad_(True)  # where the gradient is taken (= P_k without FISTA)
        gradient_step = GradientStep(p.optimizer, like)
        # oneDNN's fused LSTM is the faster CPU kernel for small batches, PyTorch's own for large ones
        # (benchmarks/README.md); both compute the same function
        onednn = self.device.type != "cpu" or n < ONEDNN_MAX_BATCH
        for it in range(max_iter + 1):
            with _onednn(onednn):
                logits = self.model(space.input(point))
            if p.fista and it > 0:
                with torch.no_grad(), _onednn(onednn):
                    at_iterate = self.model(space.input(pert))
                yield it, pert, at_iterate
            else:
                yield it, pert, logits.detach()
            if it == max_iter:
                return
            with _onednn(onednn):
                # sum: samples stay independent of their batch
                loss = hinge(logits, target, p.kappa, space.MIN_MARGIN)
                (grad,) = torch.autograd.grad(loss.sum(), point)
            with torch.no_grad():
                direction, metric = gradient_step.step(grad)
                new = space.project(soft_threshold(point - p.lr * direction, lam_lr / metric))
                if p.fista:  # momentum: the next gradient is taken ahead of the new iterate
                    point.copy_(new + it / (it + 3) * (new - pert))
                else:
                    point.copy_(new)
                pert = new


class _Book:
    """Keeps the first and the best flipped iterate of every sample: the one whose `space.score` ranks
    first (ties: the larger margin)."""

    def __init__(self, n: int, shape: torch.Size, device: torch.device, space: Space):
        self.space, self.min_margin = space, space.MIN_MARGIN
        self.perturbation = torch.zeros((n, 2, *shape), device=device)
        self.found = torch.zeros((n, 2), dtype=torch.bool, device=device)
        self.iteration = torch.full((n, 2), -1, dtype=torch.long, device=device)
        self.margin = torch.full((n, 2), float("nan"), device=device)
        self.lam = torch.full((n, 2), float("nan"), dtype=torch.float64, device=device)
        self.logits = torch.full((n, 2, 2), float("nan"), device=device)
        self.score = None  # of the best so far; None: none found yet

    @torch.no_grad()
    def record(self, it: int, pert: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
               lam: torch.Tensor) -> torch.Tensor:
        """Take iterate `it` where it is a first or a better example; returns which samples it flipped."""
        m = margin(logits, target)
        flipped = m > self.min_margin
        score = self.space.score(pert)
        first = flipped & ~self.found[:, FIRST]
        if self.score is None:
            self.score = tuple(torch.full_like(s, torch.inf if s.is_floating_point() else torch.iinfo(s.dtype).max)
                               for s in score)
        before, equal = ranks_before(score, self.score)
        better = flipped & (before | (equal & (m > self.margin[:, BEST])))
        for kind, take in ((FIRST, first), (BEST, better)):
            self.perturbation[take, kind] = pert[take]
            self.found[take, kind] = True
            self.iteration[take, kind] = it
            self.margin[take, kind] = m[take]
            self.lam[take, kind] = lam[take]
            self.logits[take, kind] = logits[take]
        self.score = tuple(torch.where(better, s, best) for s, best in zip(score, self.score, strict=True))
        return flipped

    def result(self) -> AttackResult:
        return AttackResult(self.perturbation, self.found, self.iteration, self.margin, self.lam, self.logits)
