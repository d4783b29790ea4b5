"""Model stage: the LSTM, metrics, the split, held-out CV, the final model, tuning (local + file storage)."""

import itertools
import json
import os

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

from pipeline import metrics
from pipeline.cli import main
from pipeline.config import ModelParams
from pipeline.model import MortalityLSTM, load_model, training
from pipeline.model.archs import ARCHS, TRAINING
from tests.support.runs import TEST_PROFILE, TINY, copy_run, quick_tuning, worker_reports

pytestmark = pytest.mark.thirdparty  # the floors job runs these (tests/test_floors.py)

# ---- model ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layers,bidirectional", [(1, True), (2, True), (2, False)])
def test_read_out_is_the_final_state_of_each_direction(layers, bidirectional):
    torch.manual_seed(0)
    model = MortalityLSTM(ModelParams(hidden=6, layers=layers, bidirectional=bidirectional, fc=4)).eval()
    x = torch.rand(5, 48, 19)
    out, _ = model.lstm(x)
    expected = torch.cat([out[:, -1, :6], out[:, 0, 6:]], dim=1) if bidirectional else out[:, -1, :]
    torch.testing.assert_close(model.encode(x), expected)
    logits = model(x)
    assert logits.shape == (5, 2)
    assert not any(isinstance(m, torch.nn.Softmax) for m in model.modules()), "the model returns logits"


# ---- metrics ----------------------------------------------------------------------------------------

def test_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    prob = np.round(np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1), 2)  # rounded: many ties
    pos, neg = prob[y == 1], prob[y == 0]
    pairs = np.mean([(p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)])
    assert metrics.auroc(prob, y) == pytest.approx(pairs)
    # average precision: precision at each distinct threshold, weighted by the recall it adds
    ap, prev_recall = 0.0, 0.0
    for t in np.unique(prob)[::-1]:
        pred = prob >= t
        recall = (pred & (y == 1)).sum() / (y == 1).sum()
        ap += (recall - prev_recall) * (pred & (y == 1)).sum() / pred.sum()
        prev_recall = recall
    assert metrics.auprc(prob, y) == pytest.approx(ap)
    pred = prob >= 0.5
    tp, fp, fn = (pred & (y == 1)).sum(), (pred & (y == 0)).sum(), (~pred & (y == 1)).sum()
    m = metrics.evaluate(prob, y)
    assert m["precision"] == pytest.approx(tp / (tp + fp)) and m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["accuracy"] == pytest.approx((pred == y).mean())


# ---- split ------------------------------------------------------------------------------------------

def test_split_is_stratified_disjoint_and_fixed_by_seed():
    y = np.r_[np.zeros(900, int), np.ones(100, int)]
    split = training.make_split(y, 0.15, 5, seed=1)
    assert split == training.make_split(y, 0.15, 5, seed=1) != training.make_split(y, 0.15, 5, seed=2)
    test = set(split["test"])
    folds = [set(f) for f in split["fold"]]
    assert len(test) == 150 and y[list(test)].sum() == 15
    assert all(not (test & f) for f in folds) and sum(map(len, folds)) == 850
    assert set().union(*folds, test) == set(range(1000))
    assert all(17 <= y[list(f)].sum() <= 17 for f in folds)


# ---- cross-validation ---------------------------------------------------------------------------------

def run_cv(run, *extra):
    assert main(["cv", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3", "cv.epochs=3",
                 *TINY, *extra]) == 0


def test_cv_is_held_out_only_and_metrics_match_the_saved_predictions(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    run_cv(run)
    split = json.loads((run / "split.json").read_text())
    test = set(split["test"])
    for k in range(3):
        train_idx, held_out = training.fold_indices(split, k)
        assert not set(train_idx) & set(held_out)
        assert not test & set(held_out) and not test & set(train_idx)
        folder = run / "cv" / f"fold-{k}"
        predictions = pd.read_csv(folder / "predictions.csv")
        assert predictions["sample"].tolist() == held_out.tolist()
        recomputed = metrics.evaluate(predictions["prob"].to_numpy(), predictions["y"].to_numpy())
        final = json.loads((folder / "done.json").read_text())["final"]
        last_epoch = pd.read_csv(folder / "metrics.csv").iloc[-1]
        for name in metrics.NAMES:
            assert final[name] == pytest.approx(recomputed[name], abs=1e-12)
            assert last_epoch[name] == pytest.approx(recomputed[name], abs=1e-12)
        assert (folder / "learning_curve.png").stat().st_size > 10_000
    summary = json.loads((run / "cv" / "summary.json").read_text())
    assert 1 <= summary["best_epoch"] <= 3 and set(summary["mean"]) >= set(metrics.NAMES)
    per_epoch = pd.concat([pd.read_csv(run / "cv" / f"fold-{k}" / "metrics.csv") for k in range(3)])
    assert summary["best_epoch"] == per_epoch.groupby("epoch")["loss"].mean().idxmin()  # lowest held-out loss


def test_same_seed_same_fold_metrics(small_run, tmp_path):
    a, b = copy_run(small_run, tmp_path / "a"), copy_run(small_run, tmp_path / "b")
    run_cv(a)
    run_cv(b)
    for k in range(3):
        fold = f"cv/fold-{k}/metrics.csv"
        assert (a / fold).read_text() == (b / fold).read_text()


def test_an_interrupted_fold_resumes_from_its_checkpoint(small_run, tmp_path):
    full, cut = copy_run(small_run, tmp_path / "full"), copy_run(small_run, tmp_path / "cut")
    run_cv(full)
    run_cv(cut, "cv.epochs=2")  # as if the fold task had stopped after epoch 2 ...
    for k in range(3):
        (cut / "cv" / f"fold-{k}" / "done.json").unlink()
    run_cv(cut, "--force")  # ... and was started again for 3 epochs
    for k in range(3):
        assert (full / "cv" / f"fold-{k}" / "metrics.csv").read_text() == \
            (cut / "cv" / f"fold-{k}" / "metrics.csv").read_text()


class Payload:
    """A pickle that runs a command when it is loaded, as a crafted checkpoint would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["debug", "local", pytest.param("slurm", marks=pytest.mark.slurm)])
def test_a_crafted_checkpoint_runs_no_code_and_fails_only_its_fold(kind, small_run, tmp_path, request, capsys):
    """Run directories travel between users: a checkpoint is read as tensors and plain data only. The
    fold that meets it fails; the others finish; the stage fails naming the fold's log, no marker."""
    import torch

    where = tmp_path
    extra = []
    if kind == "slurm":
        request.getfixturevalue("slurm_cluster")
        where = request.getfixturevalue("shared_tmp") / "crafted"
        extra = [f"run.slurm_profile={TEST_PROFILE}"]
    run = copy_run(small_run, where / "run")
    marker = where / "pwned"
    (run / "cv" / "fold-1").mkdir(parents=True)
    torch.save({"trainer": Payload(marker)}, run / "cv" / "fold-1" / "checkpoint.pt")
    assert main(["cv", "--run-dir", str(run), "--executor", kind, "--seed", "5", "cv.folds=3", "cv.epochs=1",
                 *TINY, *extra]) == 1
    assert not marker.exists()
    error = capsys.readouterr().err
    assert "cv: task 1" in error and "log: " in error
    log = error.split("log: ")[1].split("\n")[0]
    assert "Weights only load failed" in open(log).read()
    assert (run / "cv" / "fold-0" / "done.json").exists() and (run / "cv" / "fold-2" / "done.json").exists()
    assert not (run / ".stages" / "cv.json").exists()


# ---- final model ------------------------------------------------------------------------------------

def test_train_evaluates_once_on_the_test_set_and_load_model(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    run_cv(run)
    assert main(["train", "--run-dir", str(run), "--executor", "debug", "--seed", "5", "cv.folds=3", *TINY]) == 0
    model = load_model(run)
    assert not model.training
    split = json.loads((run / "split.json").read_text())
    predictions = pd.read_csv(run / "model" / "test_predictions.csv")
    assert predictions["sample"].tolist() == sorted(split["test"])
    x = torch.from_numpy(training.load_data(run).x.numpy()[predictions["sample"].to_numpy()])
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (len(predictions), 2) and logits.dtype == torch.float32
    np.testing.assert_allclose(torch.softmax(logits, 1)[:, 1].numpy(), predictions["prob"], atol=1e-6)
    saved = json.loads((run / "model" / "test_metrics.json").read_text())
    assert saved["auroc"] == pytest.approx(metrics.auroc(predictions["prob"], predictions["y"]))
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["epochs"] == json.loads((run / "cv" / "summary.json").read_text())["best_epoch"]


# ---- tuning -------------------------------------------------------------------------------------------

def test_tune_model_with_two_local_workers_on_the_journal_file(small_run, tmp_path):
    run = copy_run(small_run, tmp_path)
    assert main(["tune-model", "--run-dir", str(run), "--executor", "local", "--workers", "2", "--seed", "5",
                 "cv.folds=3", "tune-model.trials=4", "tune-model.max_epochs=2", "tune-model.epochs_per_report=1",
                 "tune-model.folds_used=2", "tune-model.max_hidden=32"]) == 0  # small models: the workers are tested
    best = json.loads((run / "tune-model" / "best.json").read_text())
    from pipeline.infra import study

    s = optuna.load_study(study_name=best["study"], storage=study.open_storage("", run))
    done = s.get_trials(states=study.DONE)
    assert len(done) == 4 and (run / "optuna.journal").exists()
    assert {t.user_attrs["worker"] for t in done} <= {0, 1}
    assert worker_reports(run, "tune-model") == {0: 4, 1: 4}, "both workers took part until the study was full"
    assert not s.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert set(best["params"]) == {"arch", *ARCHS["lstm"].keys, *TRAINING}  # the keys searched, and the arch
    assert best["params"]["arch"] == "lstm"
    # cv then trains with the tuned parameters, its folds in local processes
    run_cv(run, "--executor", "local", "--workers", "2")
    fold = json.loads((run / "cv" / "fold-0" / "done.json").read_text())
    assert {k: fold["params"][k] for k in best["params"]} == best["params"]


@pytest.mark.parametrize(("setting", "message"), [
    ("tune-model.max_hidden=100", "max_hidden = 100: must be 32, 64, 128 or 256"),
    ("tune-model.max_layers=3", "max_layers = 3: must be ≥ 1 and ≤ 2"),
    ("tune-model.min_lr=0.5", "min_lr = 0.5: must be ≥ 1e-05 and < 0.1"),
])
def test_a_bad_search_space_is_refused_before_anything_is_written(small_run, tmp_path, setting, message, capsys):
    run = copy_run(small_run, tmp_path)
    assert main(["tune-model", "--run-dir", str(run), "--executor", "debug", setting]) == 2
    assert message in capsys.readouterr().err
    assert not (run / "split.json").exists() and not (run / "tune-model").exists()


def test_the_trials_stay_inside_the_configured_space(small_run, tmp_path):
    _, trials = quick_tuning(copy_run(small_run, tmp_path), 5, 3, "tune-model.trials=3", "tune-model.min_lr=0.01")
    for t in trials:
        assert t.params["hidden"] == 32 and t.params["layers"] == 1 and t.params["lr"] >= 0.01
