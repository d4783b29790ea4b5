"""Robust training (pipeline/model/robust.py, docs/methods.md §2.3): on a linear model whose label rests on one
dominant cell, adversarial training with a one-edit budget shrinks that cell's weight, and the one-edit scan
finds its smallest flipping edit larger; entry-error training edits records as the error model does; the
default trains bit for bit as before."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from pipeline.attack.core import Margins
from pipeline.attack.one_edit import scan
from pipeline.attack.spaces.record import plausible_edits
from pipeline.cli import main
from pipeline.config import ModelParams
from pipeline.data.record import derive_record
from pipeline.features import FEATURES
from pipeline.model import robust, training
from pipeline.susceptibility.report import model_lines
from tests.support.chains import TINY_CHAIN, assert_complete

pytestmark = pytest.mark.thirdparty  # torch: the floors job runs these (tests/test_floors.py)

T, F, N = 4, len(FEATURES), 800
DOMINANT = (1, 2)
LO, HI = np.array([f.lo for f in FEATURES]), np.array([f.hi for f in FEATURES])
# the scale's range is the middle half of each feature's plausible range: an edit to an edge of the box moves a
# cell of x to 0 or 1
STATS = {"p5": LO + 0.25 * (HI - LO), "median": LO + 0.5 * (HI - LO), "p95": LO + 0.75 * (HI - LO)}


@pytest.fixture(scope="module")
def data():
    """Every cell recorded, x uniform in [0, 1]; the label mostly the dominant cell's, partly 12 others'."""
    rng = np.random.default_rng(0)
    x = rng.random((N, T, F))
    value = STATS["p5"] + x * (STATS["p95"] - STATS["p5"])
    others = [(h, f) for h in range(T) for f in range(F) if (h, f) != DOMINANT][:12]
    score = 4.0 * (x[:, DOMINANT[0], DOMINANT[1]] - 0.5) + sum(0.6 * (x[:, h, f] - 0.5) for h, f in others)
    y = (score + 0.2 * rng.standard_normal(N) > 0).astype(np.int64)
    records = robust.Records(value, np.ones((N, T, F), np.int32), STATS)
    return training.Data(torch.from_numpy(derive_record(value, STATS)), y, None, records)


def trained(data, **robust_keys):
    params = ModelParams(arch="logreg", lr=0.05, batch_size=64, **robust_keys)
    trainer = training.Trainer(data, np.arange(600), params, seed=1)
    for _ in range(25):
        trainer.train_epoch()
    return trainer


def dominant_weight_share(trainer) -> float:
    w = trainer.model.linear.weight.detach().numpy()
    w = (w[1] - w[0]).reshape(T, F)  # the log-odds' weight on each cell
    return abs(w[DOMINANT]) / np.abs(w).sum()


def smallest_flips(trainer, data, rows) -> np.ndarray:
    """The one-edit scan's smallest flipping edit of the dominant cell (|δ|, NaN: none flips) per target."""
    margins = Margins(trainer.model.eval(), 4096)
    out = []
    for r in rows:
        value = data.records.value[r]
        lower, upper = plausible_edits(value, np.ones_like(value, bool), STATS)
        found = scan(margins, value, int(data.y[r]), STATS, lower, upper)
        out.append(abs(found.smallest[DOMINANT]))
    return np.array(out)


def test_adversarial_training_shrinks_the_dominant_cell_and_its_smallest_flip_grows(data):
    standard, hardened = trained(data), trained(data, robust="adversarial", robust_edits=1, robust_share=0.5)
    assert dominant_weight_share(hardened) < 0.5 * dominant_weight_share(standard)
    test = np.arange(600, N)
    right = [r for r in test if all((t.predict(np.array([r]))[0] > 0.5) == bool(data.y[r])
                                    for t in (standard, hardened))]
    assert len(right) > 100  # both still classify most held-out samples right
    before, after = smallest_flips(standard, data, right[:60]), smallest_flips(hardened, data, right[:60])
    assert np.isnan(after).sum() > np.isnan(before).sum()  # fewer targets flip by that cell alone
    # target by target, the smallest flipping edit of that cell grows (none within the box: infinitely large)
    before, after = np.nan_to_num(before, nan=np.inf), np.nan_to_num(after, nan=np.inf)
    assert np.median(after) > np.median(before) and np.mean(after > before) > 0.6


def test_entry_error_training_edits_as_the_error_model_and_keeps_the_rest():
    """A batch's chosen records carry one error each (a cell changed as a slip changes it, or its event
    dropped); the others are the input as it was."""
    rng = np.random.default_rng(3)
    value = STATS["p5"] + rng.random((8, T, F)) * (STATS["p95"] - STATS["p5"])
    records = robust.Records(value, np.ones((8, T, F), np.int32), STATS)
    perturb = robust.Perturb("errors", 0.5, 1, records, seed=4)
    x = torch.from_numpy(derive_record(value, STATS))
    out = perturb(None, np.arange(8), x, torch.zeros(8, dtype=torch.long))
    changed = (out != x).flatten(1).any(1).numpy()
    assert 0 < changed.sum() < 8
    for r in np.flatnonzero(changed):  # one cell of the record differs: its hour and feature, no other
        cells = {(int(h), int(f)) for h, f in np.argwhere((out[r] != x[r]).numpy())}
        assert len({f for _, f in cells}) == 1


def test_the_default_trains_as_before(data):
    """robust = none: no record is read, the batches and the weights are those of plain training."""
    a = trained(dataclasses.replace(data, records=None))
    b = trained(data)
    assert b.perturb is None
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_report_names_the_training_mode_and_its_budget():
    params = {"arch": "lstm", "hidden": 16, "lr": 0.01, "robust": "adversarial", "robust_share": 0.5, "robust_edits": 1}
    line = model_lines({"params": params, "epochs": 3})[0]
    assert line.startswith("LSTM, adversarial training: ") and "robust_share 0.5, robust_edits 1" in line
    plain = model_lines({"params": {**params, "robust": "none"}, "epochs": 3})[0]
    assert plain.startswith("LSTM: ") and "robust" not in plain  # a plain model's line as before


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["errors", "adversarial"])
def test_a_whole_run_with_a_robust_mode_completes_with_its_report(mode, tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--run-dir", str(run), "--seed", "3", "synth.admissions=300", f"model.robust={mode}",
                 *TINY_CHAIN]) == 0
    assert_complete(run)
    saved = json.loads((run / "model" / "model.json").read_text())
    assert saved["params"]["robust"] == mode and saved["params"]["robust_edits"] == 1
    report = (run / "report.md").read_text()
    assert report.splitlines()[0].endswith(f"LSTM, {mode} training")  # the title says it, and the model section
    assert f"\nLSTM, {mode} training: " in report and "robust_share 0.5, robust_edits 1" in report
