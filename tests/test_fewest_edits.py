"""The fewest edits of the record that flip a prediction (docs/methods.md §10): the one-edit scan and the
search on linear models whose answer is known, and on the attack stage's store."""

import tracemalloc

import numpy as np
import pytest
import torch

from pipeline.attack import one_edit
from pipeline.attack.core import AttackResult, Margins
from pipeline.attack.fewest_edits import METHODS, Target, fewest_edits, fewest_edits_many, sparsest
from pipeline.attack.one_edit import MIN_MARGIN, scan
from pipeline.config import AttackParams
from tests.support.linear import Linear

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

T, F = 48, 19
# every feature recorded every hour: an edit moves only its own cell of x, x = clip(v, 0, 1)
STATS = {"p5": np.zeros(F), "median": np.full(F, 0.5), "p95": np.ones(F)}
VALUE = np.full((T, F), 0.5)
BOX = (np.full((T, F), -3.0, np.float32), np.full((T, F), 3.0, np.float32))  # beyond the clip: nothing moves


def weights(cells: dict[tuple[int, int], float], rest: float = 1e-3) -> np.ndarray:
    w = np.full((T, F), rest)
    for cell, value in cells.items():
        w[cell] = value
    return w


def search(w: np.ndarray, max_edits: int = 3):
    model = Linear(w)
    target = Target(VALUE.copy(), 0, STATS, *BOX)
    margins = Margins(model, 4096)
    return fewest_edits(margins, target, max_edits, beam=2, l1=None), target, margins


# (cells with a large weight, the fewest edits that flip, the smallest L1 of such an edit): each large
# cell can add w · 0.5 to the margin (x from 0.5 to 1), which starts at −1 and must exceed 10⁻³
CASES = {
    "one": ({(10, 3): 4.0}, 1, (1 + MIN_MARGIN) / 4.0),
    "two": ({(5, 2): 1.6, (20, 7): 1.6}, 2, (1 + MIN_MARGIN) / 1.6),
    "three": ({(1, 0): 0.8, (30, 12): 0.8, (47, 18): 0.8}, 3, (1 + MIN_MARGIN) / 0.8),
}


@pytest.mark.parametrize("case", CASES)
def test_on_a_linear_model_the_fewest_flipping_edits_are_found(case):
    cells, fewest, smallest_l1 = CASES[case]
    (found, example), target, margins = search(weights(cells))
    assert example is not None and example.edits == fewest
    assert set(zip(*np.nonzero(example.delta), strict=True)) == set(cells)  # the large-weight cells, no other
    assert example.l1 == pytest.approx(smallest_l1, rel=1e-3)  # and no larger than it must be
    assert example.margin > MIN_MARGIN and target.margin(margins, example.delta) == pytest.approx(example.margin)
    # the scan: only a cell that alone can flip is marked, with its smallest edit
    assert found.flips.sum() == (1 if fewest == 1 else 0)
    if fewest == 1:
        [(cell, w)] = cells.items()
        assert found.smallest[cell] == pytest.approx((1 + MIN_MARGIN) / w, rel=1e-4)
        assert example.method == "scan"
    else:
        assert example.method == "search"


def test_a_target_no_single_edit_flips_is_reported_as_such():
    (found, example), _, _ = search(weights({(5, 2): 1.6, (20, 7): 1.6}), max_edits=1)
    assert example is None and not found.flips.any()
    assert np.isnan(found.smallest).all()
    assert np.nanmax(found.best_margin) == pytest.approx(-1 + 1.6 * 0.5, abs=1e-5)  # the closest it came


def test_a_target_nothing_within_the_budget_flips_is_not_flipped():
    (found, example), _, _ = search(weights({(1, 0): 0.3, (2, 0): 0.3, (3, 0): 0.3}, rest=0.0))
    assert example is None and not found.flips.any()


def test_the_scan_walks_an_interpolated_value_to_its_smallest_flip():
    """A lab recorded at hours 10 and 30: an edit at 10 moves hours 0…29 (carried before, interpolated
    after), the model weighs hour 20; the smallest flip is where x at hour 20 crosses, exactly."""
    value = np.full((T, F), np.nan)
    value[10, 4], value[30, 4] = 0.2, 0.2
    w = np.zeros((T, F))
    w[20, 4] = 5.0
    model = Linear(w, margin0=0.0)
    model.b = -1.0 - 5.0 * 0.2  # margin −1 at x[20, 4] = 0.2
    margins = Margins(model, 4096)
    found = scan(margins, value, 0, STATS, *BOX)
    # x[20] = 0.2 + 0.5 · δ (halfway between 10 and 30): 5 · 0.5 · δ > 1 + 10⁻³
    assert found.smallest[10, 4] == pytest.approx((1 + MIN_MARGIN) / 2.5, rel=1e-4)
    assert found.smallest[30, 4] == pytest.approx((1 + MIN_MARGIN) / 2.5, rel=1e-4)
    assert found.flips.sum() == 2


def test_a_batch_keeps_the_l1_attacks_examples_and_the_sparsest_of_all():
    """sparsest(): kinds first, best, l1_best; best is the scan's one edit where the L1 attack found a
    two-edit example; method codes name who found each."""
    w = weights({(10, 3): 4.0})
    model = Linear(w)
    targets = [Target(VALUE.copy(), 0, STATS, *BOX) for _ in range(2)]
    l1 = torch.zeros(2, 2, T, F)
    l1[0, :, 10, 3], l1[0, :, 11, 3] = 0.5, 0.01  # target 0: the L1 attack found two edits
    found = torch.tensor([[True, True], [False, False]])
    result = AttackResult(l1, found, torch.tensor([[3, 9], [-1, -1]]), torch.zeros(2, 2), torch.ones(2, 2),
                          torch.zeros(2, 2, 2))
    batch = sparsest(model, result, targets, AttackParams(max_edits=3))
    r = batch.result
    assert r.found.tolist() == [[True, True, True], [False, True, False]]
    assert batch.method.tolist() == [[0, METHODS.index("scan"), 0], [-1, METHODS.index("scan"), -1]]
    assert (r.perturbation[:, 1] != 0).sum(dim=(1, 2)).tolist() == [1, 1]
    assert torch.equal(r.perturbation[:, 2], l1[:, 1]) and torch.equal(r.perturbation[:, 0], l1[:, 0])
    assert r.iteration[:, 1].tolist() == [-1, -1] and r.iteration[0, 2] == 9
    assert (r.margin[:, 1] > MIN_MARGIN).all()
    assert np.isfinite(batch.one_edit[:, 10, 3]).all() and np.isnan(batch.one_edit).sum() == 2 * (T * F - 1)


def test_a_further_search_named_by_the_wiring_feeds_best_with_its_own_code():
    """A search beyond the built-in ones (the record space's wiring names it, FURTHER) takes part in best by
    the same rank and has its own `method` code after METHODS: here the beam search for two edits, run as a
    further search while the built-in one is off (max_edits 1), finds what the built-in one finds."""
    from pipeline.attack.fewest_edits import search_many

    def two_edits(margins, targets, scans, params):
        return [None if e is None else type(e)(e.delta, e.margin, "two_edits")
                for e in search_many(margins, targets, scans, 2, params.edits_beam)]

    model = Linear(weights(CASES["two"][0]))
    targets = [Target(VALUE.copy(), 0, STATS, *BOX)]
    none = AttackResult(torch.zeros(1, 2, T, F), torch.zeros(1, 2, dtype=torch.bool), torch.full((1, 2), -1),
                        torch.zeros(1, 2), torch.ones(1, 2), torch.zeros(1, 2, 2))
    alone = sparsest(model, none, targets, AttackParams(max_edits=1))
    assert not alone.result.found[0, 1] and alone.method[0, 1] == -1  # no single edit flips it
    further = sparsest(model, none, targets, AttackParams(max_edits=1), further={"two_edits": two_edits})
    built_in = sparsest(model, none, targets, AttackParams(max_edits=2))
    assert further.method[0, 1] == len(METHODS) and built_in.method[0, 1] == METHODS.index("search")
    assert torch.equal(further.result.perturbation[:, 1], built_in.result.perturbation[:, 1])
    assert (further.result.perturbation[0, 1] != 0).sum() == 2

    def mislabelled(margins, targets, scans, params):
        return [type(e)(e.delta, e.margin, "search") for e in two_edits(margins, targets, scans, params)]

    with pytest.raises(ValueError, match="the search 'two_edits' returned an example of method 'search'"):
        sparsest(model, none, targets, AttackParams(max_edits=1), further={"two_edits": mislabelled})


class Batches(Linear):
    """The linear model, remembering how many inputs each of its passes took."""

    def __init__(self, w: np.ndarray):
        super().__init__(w)
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return super().forward(x)


def test_streamed_margins_are_the_margins_of_the_same_batches():
    """Margins.stream of blocks of any sizes: the numbers and the model's batches of the blocks concatenated."""
    rng = np.random.default_rng(0)
    blocks = [(rng.random((n, T, F), dtype=np.float32), rng.integers(0, 2, n)) for n in (3, 0, 9, 1, 17, 5, 8)]
    whole, streamed = Margins(Batches(weights({})), 8), Margins(Batches(weights({})), 8)
    expected = whole(np.concatenate([x for x, _ in blocks]), np.concatenate([y for _, y in blocks]))
    assert np.array_equal(streamed.stream(iter(blocks)), expected)
    assert streamed.model.sizes == whole.model.sizes == [8, 8, 8, 8, 8, 3]
    assert streamed.passes == whole.passes == 43
    assert len(streamed.stream(iter([]))) == 0


def test_the_searches_hold_a_batch_of_inputs_not_every_edit_they_ask():
    """The one-edit scan of records recorded every hour asks ~15,000 single edits per target (~55 MB of the
    model's input): derived a block at a time and passed a batch at a time, the peak stays far below that."""
    model = Linear(weights({(10, 3): 0.5}))
    targets = [Target(VALUE.copy(), 0, STATS, *BOX) for _ in range(3)]
    tracemalloc.start()
    try:
        found = fewest_edits_many(Margins(model, 1024), targets, [None] * 3, max_edits=1, beam=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    asked = sum(len(one.walk(one_edit.POINTS)) for one in one_edit.lines(
        VALUE, [(h, f) for h in range(T) for f in range(F)], STATS, *BOX))
    assert asked > 10_000 and all(example is None for _, example in found)  # none flips alone: the whole scan ran
    assert peak < 0.25 * 3 * asked * T * F * 4, f"peak {peak / 1e6:.0f} MB for {3 * asked} edits"
