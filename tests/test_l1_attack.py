"""The L1 proximal attack (pipeline/attack/l1.py) on a small model, on the CPU."""

from dataclasses import replace

import pytest
import torch

from pipeline.attack.core import BEST, FIRST, margin
from pipeline.attack.l1 import L1Attack, hinge, next_lambda, soft_threshold, split_budget
from pipeline.config import AttackConfig, ModelParams
from pipeline.model import MortalityLSTM

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)


def rule(x: torch.Tensor) -> torch.Tensor:
    """A label the model can learn: high feature 0 over the day, or high feature 3 in the last hours."""
    return ((x[:, :, 0].mean(1) + x[:, -6:, 3].mean(1)) > 1.0).long()


@pytest.fixture(scope="module")
def model():
    """A small LSTM trained for a few seconds on `rule`, so that it has a real decision boundary."""
    torch.manual_seed(0)
    model = MortalityLSTM(ModelParams(hidden=16, fc=8, bidirectional=True, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(2)
    for _ in range(150):
        x = torch.rand(128, 48, 19, generator=gen)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), rule(x)).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def batch(model):
    """64 samples in [0, 1], their target = the model's own prediction (so all are 'correct')."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 48, 19, generator=gen)
    mask = torch.rand(64, 48, 19, generator=gen) < 0.25
    with torch.no_grad():
        target = model(x).argmax(1)
    return x, target, mask


PARAMS = AttackConfig(kappa=0.1, lam=0.01, lr=0.02, optimizer="adam", max_iter=60, lam_search=1)


@pytest.fixture(scope="module")
def result(model, batch):
    x, target, mask = batch
    return L1Attack(model, PARAMS).run(x, target, mask)


def test_the_attack_finds_examples(result):
    assert result.found[:, FIRST].float().mean() > 0.5


def test_alone_or_in_a_batch_of_64_the_same(model, batch, result):
    x, target, mask = batch
    for i in (0, 17, 63):
        alone = L1Attack(model, PARAMS).run(x[i:i + 1], target[i:i + 1], mask[i:i + 1])
        assert torch.equal(alone.found[0], result.found[i])
        assert torch.equal(alone.iteration[0], result.iteration[i])
        torch.testing.assert_close(alone.perturbation[0], result.perturbation[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.margin[0], result.margin[i], atol=1e-5, rtol=0, equal_nan=True)


def test_with_the_defaults_too_a_target_alone_gets_what_it_gets_in_a_batch(model, batch):
    x, target, mask = batch
    params = AttackConfig(max_iter=120)  # the default steps and λ search, a shorter budget
    together = L1Attack(model, params).run(x, target, mask)
    assert together.found[:, BEST].float().mean() > 0.5
    for i in (3, 40):
        alone = L1Attack(model, params).run(x[i:i + 1], target[i:i + 1], mask[i:i + 1])
        assert torch.equal(alone.found[0], together.found[i])
        assert torch.equal(alone.iteration[0], together.iteration[i])
        torch.testing.assert_close(alone.perturbation[0], together.perturbation[i], atol=1e-5, rtol=0)


def test_soft_threshold_shrinks_by_the_threshold():
    p = torch.tensor([-0.5, -0.01, 0.0, 0.004, 0.3])
    assert torch.allclose(soft_threshold(p, 0.05), torch.tensor([-0.45, 0.0, 0.0, 0.0, 0.25]))


def hinge_gradient(model, x, target) -> torch.Tensor:
    """∇_P Σ max(Z_t − Z_o, 0) at P = 0."""
    point = torch.zeros_like(x, requires_grad=True)
    hinge(model(x + point), target, 0.0).sum().backward()
    return point.grad


def test_one_sgd_step_thresholds_at_lr_times_lambda(model, batch):
    """P_1 = proj(soft(−η ∇hinge, η·λ)): the threshold is η·λ, not λ (the published codes' bug)."""
    x, target, _ = batch
    x, target = x[:8], target[:8]
    lr, lam = 0.5, 0.02
    step = -lr * hinge_gradient(model, x, target)
    expected = torch.minimum(torch.maximum(soft_threshold(step, lr * lam), -x), 1 - x)
    wrong = torch.minimum(torch.maximum(soft_threshold(step, lam), -x), 1 - x)
    assert not torch.allclose(expected, wrong)
    iterates = L1Attack(model, AttackConfig(lam=lam, lr=lr, optimizer="sgd", max_iter=1, lam_search=1)).iterates(
        x, target)
    (k0, p0, _), (k1, p1, logits1) = list(iterates)
    assert (k0, k1) == (0, 1) and not p0.any()
    torch.testing.assert_close(p1, expected, atol=1e-6, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(logits1, model(x + expected), atol=1e-5, rtol=0)


def test_x_plus_p_stays_in_0_1(batch, result):
    x = batch[0]
    for kind in (FIRST, BEST):
        moved = x + result.perturbation[:, kind]
        assert moved.min() >= 0.0 and moved.max() <= 1.0


def test_best_is_the_flipped_iterate_with_the_smallest_l1(model, batch, result):
    x, target, _ = batch
    found = result.found[:, BEST]
    assert torch.equal(found, result.found[:, FIRST])
    with torch.no_grad():
        logits = model(x + result.perturbation[:, BEST])
    assert (logits.argmax(1)[found] != target[found]).all()
    torch.testing.assert_close(logits[found], result.logits[found, BEST], atol=1e-5, rtol=0)
    torch.testing.assert_close(margin(logits, target)[found], result.margin[found, BEST], atol=1e-5, rtol=0)
    assert (result.margin[found] > 0).all()
    # no flipped iterate of the whole run has a smaller L1 than best (κ = 0.1 does not change that)
    smallest = torch.full((len(x),), float("inf"))
    for _, pert, z in L1Attack(model, PARAMS).iterates(x, target):
        flipped = margin(z, target) > 0
        smallest = torch.where(flipped, torch.minimum(smallest, pert.abs().sum((1, 2))), smallest)
    torch.testing.assert_close(result.l1[found, BEST], smallest[found], atol=1e-5, rtol=0)
    assert (result.l1[found, BEST] <= result.l1[found, FIRST]).all()
    assert (result.iteration[found, FIRST] >= 1).all()
    assert (result.iteration[found, BEST] >= result.iteration[found, FIRST]).all()
    assert (result.iteration[found] <= PARAMS.max_iter).all()
    assert (result.iteration[~found] == -1).all() and result.margin[~found].isnan().all()
    assert (result.lam[found] == PARAMS.lam).all()


def test_observed_only_leaves_unmeasured_cells_alone(model, batch):
    x, target, mask = batch
    params = AttackConfig(lam=0.001, lr=0.05, optimizer="adam", max_iter=40, observed_only=True, lam_search=1)
    out = L1Attack(model, params).run(x, target, mask)
    assert out.found.any()
    for kind in (FIRST, BEST):
        assert (out.perturbation[:, kind][~mask] == 0).all()
        assert (out.perturbation[:, kind][mask] != 0).any()


@pytest.mark.parametrize("optimizer,fista", [("sgd", True), ("rmsprop", False)])
def test_other_optimizers_and_fista_keep_the_bookkeeping_consistent(model, batch, optimizer, fista):
    x, target, _ = batch
    params = AttackConfig(lam=0.005, lr=0.05, optimizer=optimizer, fista=fista, max_iter=40, lam_search=1)
    out = L1Attack(model, params).run(x[:16], target[:16])
    found = out.found[:, BEST]
    with torch.no_grad():
        logits = model(x[:16] + out.perturbation[:, BEST])
    assert (logits.argmax(1)[found] != target[:16][found]).all()


def test_the_budget_is_split_over_the_runs():
    assert split_budget(1000, 3) == [333, 333, 334]
    assert sum(split_budget(61, 4)) == 61
    with pytest.raises(ValueError, match="lam_search"):
        split_budget(2, 3)


def test_lambda_goes_up_after_a_success_down_after_a_failure_then_bisects():
    lam, low, high = torch.tensor([1.0, 1.0]), torch.zeros(2), torch.full((2,), float("inf"))
    lam, low, high = next_lambda(lam, low, high, torch.tensor([True, False]))
    assert lam.tolist() == pytest.approx([10.0, 0.1])  # open brackets: ×/÷ 10
    lam, low, high = next_lambda(lam, low, high, torch.tensor([False, True]))
    assert lam.tolist() == pytest.approx([10 ** 0.5, 10 ** -0.5])  # bracketed: geometric midpoint
    assert low.tolist() == pytest.approx([1.0, 0.1]) and high.tolist() == pytest.approx([10.0, 1.0])


SEARCH = AttackConfig(kappa=0.1, lam=10.0, lr=0.02, optimizer="adam", max_iter=60, lam_search=1)  # λ far too strong


@pytest.fixture(scope="module")
def searched(model, batch):
    x, target, _ = batch
    return L1Attack(model, replace(SEARCH, lam_search=3)).run(x, target)


def test_lambda_search_finds_examples_where_one_strong_lambda_fails(model, batch, searched):
    x, target, _ = batch
    one = L1Attack(model, SEARCH).run(x, target)
    assert searched.found[:, FIRST].sum() > 3 * one.found[:, FIRST].sum()
    # found in the later runs: the iteration counts the whole budget, never beyond it
    assert searched.iteration[searched.found[:, FIRST], FIRST].max() > 20
    assert searched.iteration.max() <= SEARCH.max_iter


def test_lambda_search_keeps_samples_independent_and_best_consistent(model, batch, searched):
    x, target, _ = batch
    for i in (0, 17, 63):
        alone = L1Attack(model, replace(SEARCH, lam_search=3)).run(x[i:i + 1], target[i:i + 1])
        assert torch.equal(alone.found[0], searched.found[i])
        assert torch.equal(alone.iteration[0], searched.iteration[i])
        torch.testing.assert_close(alone.perturbation[0], searched.perturbation[i], atol=1e-5, rtol=0)
    ok = searched.found[:, BEST]
    with torch.no_grad():
        logits = model(x[ok] + searched.perturbation[ok, BEST])
    assert (logits.argmax(1) != target[ok]).all()
    # best is the smallest L1 over every run; each example records the λ of its run
    assert (searched.l1[ok, BEST] <= searched.l1[ok, FIRST] + 1e-6).all()
    assert (searched.lam[ok, FIRST] < SEARCH.lam).any()


class LinearLogits(torch.nn.Module):
    """Z_0 − Z_1 = w·x + b: the L1-minimal flip inside the box is known in closed form."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w = torch.nn.Parameter(w)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x * self.w).sum(dim=(1, 2)) + self.b
        return torch.stack([d / 2, -d / 2], dim=1)


def minimal_flip(w: torch.Tensor, x: torch.Tensor, d0: float) -> tuple[float, int]:
    """L1 and L0 of the smallest perturbation in the box that lowers w·x + b by d0 > 0.

    Cells in order of |w|: each moves as far as the box allows (to 0 where w > 0, to 1 where w < 0)
    until the margin is crossed; the last one only as far as needed.
    """
    room = torch.where(w > 0, x, 1 - x).flatten()
    order = torch.argsort(w.abs().flatten(), descending=True)
    l1, left = 0.0, d0
    for count, j in enumerate(order.tolist(), start=1):
        gain = float(w.flatten()[j].abs() * room[j])
        if gain >= left:
            return l1 + left / float(w.flatten()[j].abs()), count
        l1, left = l1 + float(room[j]), left - gain
    raise AssertionError("no flip inside the box")


@pytest.mark.parametrize("case", range(4))
def test_on_a_linear_model_the_defaults_find_the_l1_minimal_flip(model, batch, case):
    """The default attack lands within 5% of the closed-form minimal L1, with at most one extra cell.

    The linear model is the trained LSTM's linearization at a sample, w = ∇(Z_0 − Z_1): weights with
    the heavy tail that input gradients have (most cells near 0, a few large), not i.i.d. ones.
    """
    x_all = batch[0]
    point = x_all.clone().requires_grad_(True)
    logits = model(point)
    (logits[:, 0] - logits[:, 1]).sum().backward()
    usable = [i for i in range(len(x_all)) if (point.grad[i] != 0).sum() > 100]
    i = usable[case]
    w, x = point.grad[i].clone(), x_all[i:i + 1]
    room = torch.where(w > 0, x[0], 1 - x[0]).flatten()
    gains = (w.abs().flatten() * room)[torch.argsort(w.abs().flatten(), descending=True)]
    needed = 3 + 2 * case  # cells the minimal flip needs
    d0 = float(gains[:needed - 1].sum() + gains[needed - 1] / 2)
    linear = LinearLogits(w, b=d0 - float((x[0] * w).sum()))  # w·x + b = d0: class 0, margin d0
    l1_min, l0_min = minimal_flip(w, x[0], d0)
    assert l0_min == needed
    result = L1Attack(linear, AttackConfig()).run(x, torch.tensor([0]))
    assert result.found[0, BEST]
    p = result.perturbation[0, BEST]
    assert float(p.abs().sum()) <= 1.05 * l1_min
    assert int((p != 0).sum()) <= l0_min + 1


def test_adam_thresholds_each_cell_in_its_own_metric(model, batch):
    """One proximal Adam step: the threshold of a cell is η·λ / (√v̂ + ε), not η·λ."""
    x, target, _ = batch
    x, target = x[:8], target[:8]
    lr, lam = 0.05, 0.01
    g = hinge_gradient(model, x, target)
    # after one step m̂ = g and √v̂ = |g|: a cell moves by η·sign(g) shrunk by η·λ / |g|, i.e. only where
    # |g| > λ, as ISTA would decide
    metric = g.abs() + 1e-8
    expected = torch.minimum(torch.maximum(soft_threshold(-lr * g / metric, lr * lam / metric), -x), 1 - x)
    params = AttackConfig(lam=lam, lr=lr, optimizer="adam", max_iter=1, lam_search=1)
    (_, _, _), (_, p1, _) = list(L1Attack(model, params).iterates(x, target))
    torch.testing.assert_close(p1, expected, atol=1e-6, rtol=0)
    assert ((p1 != 0) == (g.abs() > lam)).float().mean() > 0.999
    assert (p1 != 0).float().mean() < 0.5  # a scalar threshold η·λ would move every cell with g ≠ 0
