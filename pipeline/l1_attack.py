"""The L1 proximal adversarial attack (METHODS.md §3; Sun et al. 2018, EAD of Chen et al. 2018).

For a correctly classified sample x (class t, other class o) it looks for a sparse, small
perturbation P that flips the model's prediction, minimizing per sample

    ℓ(P) = max(Z_t(x + P) − Z_o(x + P), −κ) + λ‖P‖₁        (‖·‖₁ over the 48 × 19 cells)

by proximal gradient steps: a step of SGD | Adam | RMSprop on the hinge term, soft-thresholding at
η·λ (η = learning rate), projection so that x + P stays in [0, 1], optionally FISTA momentum and
(`observed_only`) only on cells that were measured. The batch loss is the *sum* of per-sample
losses, so a sample's optimization does not depend on its batch. It does not stop at the first
success: it runs `max_iter` updates and keeps, per sample, the **first** flipped iterate and the
**best** one (lowest ℓ among flipped iterates).

>>> result = L1Attack(model, AttackParams(max_iter=100)).run(x, target, mask)   # doctest: +SKIP
>>> result.perturbation[:, BEST]                                                 # (batch, 48, 19)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

FIRST, BEST = 0, 1
KINDS = ("first", "best")


@dataclass(frozen=True)
class AttackParams:
    kappa: float = 0.0  # confidence margin κ: the hinge stops pushing at Z_t − Z_o = −κ
    lam: float = 1e-3  # λ, weight of the L1 norm
    lr: float = 0.01  # η, step size of the optimizer (and the threshold is η·λ)
    optimizer: str = "adam"
    max_iter: int = 1000  # proximal updates (every one is evaluated: no early stop)
    fista: bool = False
    observed_only: bool = False
    lam_search: int = 1  # runs sharing max_iter, with a per-sample λ search between them; 1 = one run, one λ


@dataclass
class AttackResult:
    """Per sample and kind (FIRST, BEST): the perturbation and where and how it was found."""

    perturbation: torch.Tensor  # (n, 2, time, feature)
    found: torch.Tensor  # (n, 2) bool
    iteration: torch.Tensor  # (n, 2) int: number of updates applied to reach it; -1 if not found
    loss: torch.Tensor  # (n, 2) ℓ of that iterate; NaN if not found
    logits: torch.Tensor  # (n, 2, 2) the model's logits at x + P


def soft_threshold(p: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The proximal operator of threshold·‖·‖₁: shrink every cell towards 0 by `threshold`."""
    return torch.sign(p) * torch.clamp(p.abs() - threshold, min=0.0)


def hinge(logits: torch.Tensor, target: torch.Tensor, kappa: float) -> torch.Tensor:
    """max(Z_t − Z_o, −κ) per sample; negative once the prediction is flipped."""
    z_t = logits.gather(1, target[:, None])[:, 0]
    z_o = logits.gather(1, (1 - target)[:, None])[:, 0]
    return torch.clamp(z_t - z_o, min=-kappa)


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


def _optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"unknown attack optimizer {name!r} (sgd, adam, rmsprop)")


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


class L1Attack:
    """Batched attack of a frozen model (eval mode), on whatever device the model is on."""

    def __init__(self, model: torch.nn.Module, params: AttackParams):
        self.model = model.eval()
        for weight in self.model.parameters():
            weight.requires_grad_(False)
        self.params = params
        self.device = next(model.parameters()).device
        if self.device.type == "cuda":
            # cuDNN computes an RNN's backward pass only in training mode: put the recurrent layers in
            # it with their dropout off, which computes exactly what eval mode does
            for module in self.model.modules():
                if isinstance(module, torch.nn.RNNBase):
                    module.dropout = 0.0
                    module.train()

    def run(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> AttackResult:
        """x (n, time, feature) in [0, 1]; target (n,) the correct class; mask (n, time, feature) bool.

        With ``lam_search`` = R > 1 the budget of ``max_iter`` updates is split over R runs from P = 0.
        After each run a sample's λ goes up if the run found an example for it and down if not (×/÷ 10
        until bracketed, then the geometric midpoint, as EAD searches its constant). First and best are
        kept over all runs; best compares ℓ at the configured λ, and iterations count the whole budget.
        """
        x, target = x.to(self.device), target.to(self.device).long()
        book = _Book(len(x), x.shape[1:], self.device)
        if self.params.lam_search <= 1:
            for it, pert, logits in self.iterates(x, target, mask):
                book.record(it, pert, logits, target, self.params)
            return book.result()
        lam = torch.full((len(x),), self.params.lam, dtype=torch.float64, device=self.device)
        low, high = torch.zeros_like(lam), torch.full_like(lam, float("inf"))
        spent = 0
        for steps in split_budget(self.params.max_iter, self.params.lam_search):
            succeeded = torch.zeros(len(x), dtype=torch.bool, device=self.device)
            for it, pert, logits in self.iterates(x, target, mask, lam=lam, max_iter=steps):
                if it == 0 and spent > 0:
                    continue  # P = 0 again: evaluated by the first run already
                book.record(spent + it, pert, logits, target, self.params)
                succeeded |= logits.argmax(1) != target
            spent += steps
            lam, low, high = next_lambda(lam, low, high, succeeded)
        return book.result()

    def iterates(self, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                 lam: torch.Tensor | None = None, max_iter: int | None = None):
        """Yield (k, P_k, Z(x + P_k)) for k = 0 … max_iter; P_0 = 0, P_k after k proximal updates.

        `lam` (n,): a λ per sample instead of the configured one; `max_iter`: another number of updates.
        """
        p = self.params
        max_iter = p.max_iter if max_iter is None else max_iter
        threshold = p.lr * p.lam if lam is None else (p.lr * lam).to(x.dtype)[:, None, None]
        x, target = x.to(self.device), target.to(self.device).long()
        allowed = mask.to(self.device).float() if (p.observed_only and mask is not None) else None
        pert = torch.zeros_like(x)  # the iterate P_k
        point = pert.clone().requires_grad_(True)  # where the gradient is taken (= P_k without FISTA)
        optimizer = _optimizer(p.optimizer, [point], p.lr)
        # oneDNN's fused LSTM is the faster CPU kernel for small batches, PyTorch's own for large ones
        # (benchmarks/README.md); both compute the same function
        onednn = self.device.type != "cpu" or len(x) < ONEDNN_MAX_BATCH
        for it in range(max_iter + 1):
            with _onednn(onednn):
                logits = self.model(x + point)
            if p.fista and it > 0:
                with torch.no_grad(), _onednn(onednn):
                    at_iterate = self.model(x + pert)
                yield it, pert, at_iterate
            else:
                yield it, pert, logits.detach()
            if it == max_iter:
                return
            optimizer.zero_grad()
            with _onednn(onednn):
                hinge(logits, target, p.kappa).sum().backward()  # sum: samples stay independent of their batch
            optimizer.step()
            with torch.no_grad():
                new = soft_threshold(point, threshold)
                new = torch.minimum(torch.maximum(new, -x), 1.0 - x)  # x + P in [0, 1]
                if allowed is not None:
                    new = new * allowed
                if p.fista:  # momentum: the next gradient is taken ahead of the new iterate
                    point.copy_(new + it / (it + 3) * (new - pert))
                else:
                    point.copy_(new)
                pert = new


class _Book:
    """Keeps the first and the best flipped iterate of every sample."""

    def __init__(self, n: int, shape: torch.Size, device: torch.device):
        self.perturbation = torch.zeros((n, 2, *shape), device=device)
        self.found = torch.zeros((n, 2), dtype=torch.bool, device=device)
        self.iteration = torch.full((n, 2), -1, dtype=torch.long, device=device)
        self.loss = torch.full((n, 2), float("nan"), device=device)
        self.logits = torch.full((n, 2, 2), float("nan"), device=device)

    @torch.no_grad()
    def record(self, it: int, pert: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
               p: AttackParams) -> None:
        flipped = logits.argmax(1) != target
        loss = hinge(logits, target, p.kappa) + p.lam * pert.abs().sum(dim=(1, 2))
        first = flipped & ~self.found[:, FIRST]
        better = flipped & (~self.found[:, BEST] | (loss < self.loss[:, BEST]))
        for kind, take in ((FIRST, first), (BEST, better)):
            self.perturbation[take, kind] = pert[take]
            self.found[take, kind] = True
            self.iteration[take, kind] = it
            self.loss[take, kind] = loss[take]
            self.logits[take, kind] = logits[take]

    def result(self) -> AttackResult:
        return AttackResult(self.perturbation, self.found, self.iteration, self.loss, self.logits)
