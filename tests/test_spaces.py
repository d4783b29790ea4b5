"""The attack spaces (pipeline/attack/spaces/: geometry) and their wiring (pipeline/attack/wiring/: searches,
store, reading back): what a space's store says about its examples is true of them, and every space has
its place in each layer."""

import numpy as np
import pytest
import torch

from pipeline.attack import spaces, wiring
from pipeline.attack.core import ranks_before
from pipeline.config import AttackConfig, ConfigError
from pipeline.susceptibility.space_text import TEXT
from tests.support.chains import run_attack
from tests.support.runs import copy_trained


def l0(a: np.ndarray) -> np.ndarray:
    return (a != 0).sum(axis=(-2, -1))


def l1(a: np.ndarray) -> np.ndarray:
    return np.abs(a).sum(axis=(-2, -1))


@pytest.mark.parametrize("name", spaces.NAMES)
def test_the_kind_long_name_is_true_of_the_examples(name, trained_run, tmp_path):
    """attack.zarr's `kind` carries the space's own description, and the examples obey it: in the tensor
    space best is the flipped iterate with the smallest L1, so never larger than first; in the record space
    best (any search) and l1_best (the L1 attack) have the fewest edited values, then the smallest L1."""
    space, wired = spaces.get(name), wiring.get(name)
    store = run_attack(copy_trained(trained_run, tmp_path), "--executor", "debug", f"attack.space={name}",
                       "attack.max_iter=60")
    assert store.attrs["space"] == name and wiring.of(store) is wired and wired.SPACE is space
    assert store.kind.values.tolist() == list(wired.KINDS)
    assert store.kind.attrs["long_name"] == wired.KIND["long_name"]
    assert store.perturbation.attrs["long_name"] == wired.EFFECT
    found = store.found.values
    assert found[:, 0].sum() > 5, "too few examples to check anything"
    assert (found[:, 1] | ~found[:, 0]).all()  # an iterate flipped: a best example exists
    margin = store.margin.values
    assert (margin[found] > space.MIN_MARGIN).all()
    both = found[:, 0]
    if name == "tensor":
        assert "smallest L1" in wired.KIND["long_name"]
        p = store.perturbation.values[both]
        assert (l1(p[:, 1]) <= l1(p[:, 0]) + 1e-6).all()
        assert (l1(p[:, 1]) < l1(p[:, 0]) - 1e-6).any(), "best never improved on first: nothing was checked"
    else:
        assert "fewest edited values" in wired.KIND["long_name"]
        edit = store["edit"].values[both]
        first, best, l1_best = (edit[:, store.kind.values.tolist().index(k)] for k in ("first", "best", "l1_best"))
        for sparser, than in ((l1_best, first), (best, l1_best)):
            fewer, same = l0(sparser) < l0(than), l0(sparser) == l0(than)
            assert (fewer | (same & (l1(sparser) <= l1(than) + 1e-5))).all()
        assert (l0(best) < l0(first)).any(), "best never had fewer edits than first: nothing was checked"
        assert set(np.unique(store.method.values[both, 1])) <= set(range(len(store.method.attrs["flag_values"])))


def test_the_attack_ranks_by_the_space_score_then_the_margin():
    fewer, smaller = torch.tensor([1, 2, 2, 2]), torch.tensor([5.0, 1.0, 2.0, 3.0])
    before, equal = ranks_before((fewer, smaller), (torch.tensor([2, 2, 2, 1]), torch.tensor([1.0, 2.0, 2.0, 0.0])))
    assert before.tolist() == [True, True, False, False]
    assert equal.tolist() == [False, False, True, False]


def test_the_attack_and_the_fewest_edit_search_pick_best_by_one_rule():
    """The L1 attack keeps the flipped iterate that ranks first by the space's keys, then the larger margin
    (l1._Book); the searches rank their examples by Example.rank: both are core.rank_key. Fed the same
    flipped examples (exact values, ties of keys and of margins included), they keep the same one."""
    from pipeline.attack.core import BEST
    from pipeline.attack.fewest_edits import Example
    from pipeline.attack.l1 import _Book
    from pipeline.attack.spaces.record import RecordSpace

    rng = np.random.default_rng(0)
    n, shape = 200, (3, 2)
    box = torch.ones((n, *shape))
    space = RecordSpace(torch.zeros((n, *shape), dtype=torch.float64), torch.ones(2, dtype=torch.float64),
                        torch.ones((n, *shape), dtype=torch.bool), -box, box, transform=None)
    book = _Book(n, torch.Size(shape), torch.device("cpu"), space)
    seen = []
    for it in range(12):
        delta = (rng.integers(-2, 3, (n, *shape)) * 0.25 * (rng.random((n, *shape)) < 0.4)).astype(np.float32)
        m = rng.choice([-0.5, 0.25, 0.5, 1.0], n)
        logits = torch.from_numpy(np.stack([np.zeros(n), m], axis=1)).float()  # target 0: margin Z_1 − Z_0 = m
        book.record(it, torch.from_numpy(delta), logits, torch.zeros(n, dtype=torch.long),
                    torch.ones(n, dtype=torch.float64))
        seen.append((delta, m))
    kept = book.result().perturbation[:, BEST].numpy()
    compared = 0
    for i in range(n):
        flipped = [Example(d[i], float(m[i]), "l1") for d, m in seen if m[i] > space.MIN_MARGIN]
        if len(flipped) > 1:
            np.testing.assert_array_equal(kept[i], min(flipped, key=Example.rank).delta, err_msg=f"target {i}")
            compared += 1
    assert compared > n // 2


def test_each_space_is_a_module_named_as_its_choice_in_each_layer():
    """Its geometry (spaces/NAME.py), its wiring (wiring/NAME.py) and the report's text of it."""
    for name in spaces.NAMES:
        assert spaces.get(name).name == name and wiring.get(name).SPACE is spaces.get(name)
        assert TEXT[name].paragraph and TEXT[name].kinds and TEXT[name].realizable
    assert set(TEXT) == set(spaces.NAMES) == set(wiring.NAMES)
    assert AttackConfig().space == spaces.DEFAULT
    for layer in (spaces, wiring):
        with pytest.raises(ValueError, match="unknown attack space 'pixel'"):
            layer.get("pixel")


def test_a_space_refuses_the_keys_it_cannot_take():
    with pytest.raises(ConfigError, match="observed_only"):
        spaces.check(AttackConfig(space="record", observed_only=True))
    spaces.check(AttackConfig(space="tensor", observed_only=True))


def test_a_store_that_names_no_space_is_read_as_the_tensor_space():
    """attack.zarr written before stores named their space held Sun et al.'s tensor-space examples."""

    class Unnamed:
        attrs: dict = {}

    assert wiring.of(Unnamed()) is wiring.get("tensor")
