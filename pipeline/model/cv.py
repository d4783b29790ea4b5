"""Stage `cv`: stratified k-fold cross-validation on the non-test data, one array task per fold.

Each fold trains on the other folds and evaluates on its own after every epoch, saving in
``cv/fold-K/``: ``metrics.csv`` (per epoch: AUROC, AUPRC, F1, precision, recall, accuracy, loss on
the held-out fold, and the training loss), ``predictions.csv`` (sample, y, prob of the final
epoch — the saved metrics can be recomputed from it), ``checkpoint.pt`` (resumable) and
``learning_curve.png``. ``cv/summary.json`` gives mean ± sd over folds and the epoch count with the
lowest mean held-out loss, which `train` uses.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from pipeline import figures, metrics
from pipeline.config import PipelineConfig
from pipeline.infra import layout, rundir
from pipeline.infra.checkpoint import Checkpoint
from pipeline.infra.launch import run_array, stage_seed
from pipeline.infra.rundir import RunDir
from pipeline.model import training
from pipeline.model.archs import params_from_dict

log = logging.getLogger(__name__)


def run_fold(run_dir: str, fold: int, params: dict, epochs: int, seed: int, workers: int) -> dict:
    """Train and evaluate one fold (a task: runs in a Slurm array, a local process or in-process).

    Resumes from ``checkpoint.pt`` after a requeue; a fold that is done is not redone.
    """
    run = RunDir(run_dir)
    folder = run.fold_dir(fold)
    inputs = run.data_fingerprints()
    work = json.loads(json.dumps({"params": params, "epochs": epochs, "seed": seed, "inputs": inputs}))
    if (folder / layout.FOLD_DONE).exists():
        done = json.loads((folder / layout.FOLD_DONE).read_text())
        if {k: done.get(k) for k in work} == work:
            return done
        log.info("fold %d: done with other parameters or data; trained again", fold)
    training.set_threads(workers)
    data = training.load_data(run.path, records=params.get("robust", "none") != "none")
    split = run.split()
    train_idx, held_out = training.fold_indices(split, fold)
    trainer = training.Trainer(data, train_idx, params_from_dict(params), seed)
    history: list[dict] = []
    # progress resumes only for exactly this work: a run of another length (even a longer one, whose
    # first epochs would match) is not continued, so a fold never holds more epochs than asked for
    checkpoint = Checkpoint(folder / layout.FOLD_CHECKPOINT, key={"fold": fold, **work})
    if (saved := checkpoint.load()) is not None:
        trainer.load_state(saved["trainer"])
        history = saved["history"]
        log.info("fold %d: resumed at epoch %d", fold, trainer.epoch)

    def on_epoch(epoch: int, row: dict, prob: np.ndarray) -> None:
        history.append(row)
        log.info("fold %d epoch %d/%d: train loss %.4f, held-out AUROC %.4f, AUPRC %.4f", fold, epoch, epochs,
                 row["train_loss"], row["auroc"], row["auprc"])
        checkpoint.save({"trainer": trainer.state(), "history": history})

    training.fit(trainer, held_out, epochs, on_epoch)
    prob = trainer.predict(held_out)
    predictions = pd.DataFrame({"sample": held_out, "y": data.y[held_out], "prob": prob})
    rundir.write_text(folder / layout.FOLD_PREDICTIONS, predictions.to_csv(index=False))
    rundir.write_text(folder / layout.FOLD_METRICS, pd.DataFrame(history).to_csv(index=False))
    figures.learning_curve(pd.DataFrame(history), folder / layout.FOLD_CURVE, f"fold {fold}")
    done = {"fold": fold, **work, "n_train": len(train_idx),
            "n_held_out": len(held_out), "final": metrics.evaluate(prob, data.y[held_out])}
    rundir.write_json(folder / layout.FOLD_DONE, done)
    return done


def summarize(run_dir: RunDir, folds: int) -> dict:
    """Mean ± sd over folds of the metrics at the chosen epoch — the epoch count with the lowest mean held-out
    loss, which `train` trains the final model for — and at the last; and the learning curve's state.

    Loss rather than AUROC: AUROC is often flat after an epoch or two (ranking is learnt early) while the
    probabilities are still far from calibrated, and the attack's targets depend on the 0.5 threshold.
    """
    per_epoch = pd.concat([pd.read_csv(run_dir.fold_dir(k) / layout.FOLD_METRICS).assign(fold=k) for k in range(folds)])
    mean = per_epoch.groupby("epoch")[["loss", "auroc", "train_loss"]].mean()
    best = int(mean["loss"].idxmin())
    final = pd.DataFrame([json.loads((run_dir.fold_dir(k) / layout.FOLD_DONE).read_text())["final"]
                          for k in range(folds)])
    chosen = per_epoch[per_epoch.epoch == best].sort_values("fold")[list(final.columns)]
    summary = {
        "folds": folds,
        "mean": final.mean().to_dict(),  # the last epoch's (the folds' final predictions)
        "sd": _sd(final, folds),
        "per_fold": final.to_dict(orient="records"),
        "best_epoch": best,
        "best_epoch_rule": "lowest mean held-out cross-entropy over the folds",
        "best_epoch_mean_loss": float(mean.loss[best]),
        "best_epoch_mean_auroc": float(mean.auroc[best]),
        "chosen_epoch": {"epoch": best, "mean": chosen.mean().to_dict(), "sd": _sd(chosen, folds),
                         "per_fold": chosen.to_dict(orient="records")},
        "learning_curve": curve_state(mean, best),
        "provenance": "every figure is computed on held-out folds only (never on training data)",
    }
    rundir.write_json(run_dir.cv_file(layout.CV_SUMMARY), summary)
    table = pd.DataFrame({"mean": final.mean(), "sd": pd.Series(summary["sd"]),
                          "chosen_epoch_mean": chosen.mean(), "chosen_epoch_sd": pd.Series(_sd(chosen, folds))})
    rundir.write_text(run_dir.cv_file(layout.CV_TABLE), table.to_csv(index_label="metric"))
    return summary


FALLING = 0.01  # a loss that drops by more than 1% over the last epochs is still falling


def curve_state(mean: pd.DataFrame, best: int) -> dict:
    """Whether training stopped too soon: the chosen epoch is the last allowed, and whether the mean training
    and held-out losses still fell over the last quarter of the epochs (at least the last two)."""
    last = int(mean.index.max())
    tail = mean.loc[mean.index >= max(int(mean.index.min()), last - max(1, len(mean) // 4))]

    def falling(column: str) -> bool:
        start, end = float(tail[column].iloc[0]), float(tail[column].iloc[-1])
        return len(tail) > 1 and end < start * (1 - FALLING)

    return {"last_epoch": last, "chosen_is_last": best == last, "train_loss_falling": falling("train_loss"),
            "held_out_loss_falling": falling("loss"), "rule": f"a drop of more than {FALLING:.0%} over epochs "
            f"{int(tail.index[0])}–{last}"}


def _sd(frame: pd.DataFrame, folds: int) -> dict:
    return frame.std(ddof=1).to_dict() if folds > 1 else {k: 0.0 for k in frame}


def curve_warnings(summary: dict) -> list[str]:
    """What the learning curve says about the chosen epoch, in words (empty: nothing to warn of)."""
    state = summary.get("learning_curve")
    if not state:
        return []
    out = []
    if state["chosen_is_last"]:
        out.append(f"the chosen epoch is the last cv.epochs allows ({state['last_epoch']}): the held-out loss had "
                   "not stopped falling, so a longer run (a larger cv.epochs) may give a better model")
    if state["train_loss_falling"]:
        out.append(f"the training loss was still falling at epoch {state['last_epoch']} ({state['rule']})")
    return out


def cv(cfg: PipelineConfig, run_dir: RunDir) -> None:
    _, params, source = training.fit_inputs(cfg, run_dir)
    log.info("cv: %d folds, %d epochs, parameters from %s", cfg.cv.folds, cfg.cv.epochs, source)
    seed = stage_seed(cfg, "cv")
    calls = [(str(run_dir.path), k, params, cfg.cv.epochs, seed + k, cfg.run.workers) for k in range(cfg.cv.folds)]
    run_array(cfg, run_dir, "cv", run_fold, calls)
    summary = summarize(run_dir, cfg.cv.folds)
    m, sd = summary["mean"], summary["sd"]
    chosen = summary["chosen_epoch"]
    log.info("cv: held-out AUROC %.4f ± %.4f, AUPRC %.4f ± %.4f at the chosen epoch %d (last epoch: AUROC %.4f ± %.4f, "
             "F1 %.4f ± %.4f)", chosen["mean"]["auroc"], chosen["sd"]["auroc"], chosen["mean"]["auprc"],
             chosen["sd"]["auprc"], summary["best_epoch"], m["auroc"], sd["auroc"], m["f1"], sd["f1"])
    for warning in curve_warnings(summary):
        log.warning("cv: %s", warning)
