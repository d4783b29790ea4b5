"""The L1 proximal attack (pipeline/l1_attack.py) on a small model, on the CPU."""

from dataclasses import replace

import pytest
import torch

from pipeline.config import ModelParams
from pipeline.l1_attack import BEST, FIRST, AttackParams, L1Attack, hinge, next_lambda, soft_threshold, split_budget
from pipeline.model import MortalityLSTM


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


PARAMS = AttackParams(kappa=0.1, lam=0.01, lr=0.02, optimizer="adam", max_iter=60)


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
        torch.testing.assert_close(alone.loss[0], result.loss[i], atol=1e-5, rtol=0, equal_nan=True)


def test_soft_threshold_shrinks_by_the_threshold():
    p = torch.tensor([-0.5, -0.01, 0.0, 0.004, 0.3])
    assert torch.allclose(soft_threshold(p, 0.05), torch.tensor([-0.45, 0.0, 0.0, 0.0, 0.25]))


def test_one_sgd_step_thresholds_at_lr_times_lambda(model, batch):
    """P_1 = proj(soft(−η ∇hinge, η·λ)): the threshold is η·λ, not λ (the published codes' bug)."""
    x, target, _ = batch
    x, target = x[:8], target[:8]
    lr, lam = 0.5, 0.02
    point = torch.zeros_like(x, requires_grad=True)
    hinge(model(x + point), target, 0.0).sum().backward()
    step = -lr * point.grad
    expected = torch.minimum(torch.maximum(soft_threshold(step, lr * lam), -x), 1 - x)
    wrong = torch.minimum(torch.maximum(soft_threshold(step, lam), -x), 1 - x)
    assert not torch.allclose(expected, wrong)
    iterates = L1Attack(model, AttackParams(lam=lam, lr=lr, optimizer="sgd", max_iter=1)).iterates(x, target)
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


def test_best_flips_and_is_no_worse_than_first(model, batch, result):
    x, target, _ = batch
    found = result.found[:, BEST]
    assert torch.equal(found, result.found[:, FIRST])
    with torch.no_grad():
        logits = model(x + result.perturbation[:, BEST])
    assert (logits.argmax(1)[found] != target[found]).all()
    torch.testing.assert_close(logits[found], result.logits[found, BEST], atol=1e-5, rtol=0)
    loss = hinge(logits, target, PARAMS.kappa) + PARAMS.lam * result.perturbation[:, BEST].abs().sum(dim=(1, 2))
    torch.testing.assert_close(loss[found], result.loss[found, BEST], atol=1e-5, rtol=0)
    assert (result.loss[found, BEST] <= result.loss[found, FIRST] + 1e-6).all()
    assert (result.iteration[found, FIRST] >= 1).all()
    assert (result.iteration[found, BEST] >= result.iteration[found, FIRST]).all()
    assert (result.iteration[found] <= PARAMS.max_iter).all()
    assert (result.iteration[~found] == -1).all() and result.loss[~found].isnan().all()


def test_observed_only_leaves_unmeasured_cells_alone(model, batch):
    x, target, mask = batch
    out = L1Attack(model, AttackParams(lam=0.001, lr=0.05, max_iter=40, observed_only=True)).run(x, target, mask)
    assert out.found.any()
    for kind in (FIRST, BEST):
        assert (out.perturbation[:, kind][~mask] == 0).all()
        assert (out.perturbation[:, kind][mask] != 0).any()


@pytest.mark.parametrize("optimizer,fista", [("sgd", True), ("rmsprop", False)])
def test_other_optimizers_and_fista_keep_the_bookkeeping_consistent(model, batch, optimizer, fista):
    x, target, _ = batch
    params = AttackParams(lam=0.005, lr=0.05, optimizer=optimizer, fista=fista, max_iter=40)
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


SEARCH = AttackParams(kappa=0.1, lam=1.0, lr=0.02, optimizer="adam", max_iter=60)  # λ far too strong


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
    # best is judged at the configured λ, over every run
    loss = hinge(logits, target[ok], SEARCH.kappa) + SEARCH.lam * searched.perturbation[ok, BEST].abs().sum((1, 2))
    torch.testing.assert_close(loss, searched.loss[ok, BEST], atol=1e-4, rtol=1e-5)
    assert (searched.loss[ok, BEST] <= searched.loss[ok, FIRST] + 1e-6).all()
