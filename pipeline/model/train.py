"""Stage `train`: the final model on all non-test data, evaluated once on the held-out test set.

Parameters come from `tune-model` (or the config's [model]); the epoch count from `cv`'s lowest mean
held-out loss unless ``[train] epochs`` sets it. Writes ``model/``: weights.pt and model.json (so
that :func:`pipeline.model.load_model` returns it), test_predictions.csv (sample, y, prob),
test_metrics.json and training_loss.png. With ``[model] external`` nothing is trained: the user's model
is checked, stored in ``model/`` and evaluated once on the test set the same way (pipeline/model/external.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline import figures, metrics
from pipeline.config import ConfigError, PipelineConfig
from pipeline.infra import layout, rundir
from pipeline.infra.checkpoint import Checkpoint
from pipeline.infra.launch import run_array, stage_seed
from pipeline.infra.rundir import RunDir
from pipeline.model import external, training
from pipeline.model.archs import params_from_dict
from pipeline.model.saved import save_model

log = logging.getLogger(__name__)


def train_final(run_dir: str, params: dict, epochs: int, seed: int, workers: int, provenance: dict) -> dict:
    """The task: train on all non-test samples (resumable per epoch), then predict the test set once."""
    training.set_threads(workers)
    run = RunDir(run_dir)
    data = training.load_data(run.path, records=params.get("robust", "none") != "none")
    split = run.split()
    train_idx, test_idx = training.non_test_indices(split), np.array(sorted(split["test"]))
    trainer = training.Trainer(data, train_idx, params_from_dict(params), seed)
    inputs = run.data_fingerprints()
    checkpoint = Checkpoint(run / layout.TRAIN_CHECKPOINT, key={"params": params, "epochs": epochs, "seed": seed,
                                                              "inputs": inputs})  # exactly this work, or afresh
    losses: list[float] = []
    if (saved := checkpoint.load()) is not None:
        trainer.load_state(saved["trainer"])
        losses = saved["losses"]
        log.info("train: resumed at epoch %d", trainer.epoch)
    while trainer.epoch < epochs:
        losses.append(trainer.train_epoch())
        log.info("train: epoch %d/%d, training loss %.4f", trainer.epoch, epochs, losses[-1])
        checkpoint.save({"trainer": trainer.state(), "losses": losses})
    prob = trainer.predict(test_idx)
    meta = {"n_features": int(data.x.shape[2]), "n_time": int(data.x.shape[1]), "epochs": epochs, "seed": seed,
            "n_train": len(train_idx), "n_test": len(test_idx), **provenance}
    with rundir.atomic_path(run.model_dir) as folder:
        save_model(folder, trainer.model.cpu(), meta)
        test_metrics = write_test_results(folder, run, test_idx, data.y[test_idx], prob)
        figures.training_loss(losses, folder / layout.TRAINING_LOSS, "final model: training loss per epoch")
    checkpoint.clear()
    return test_metrics


def write_test_results(folder: Path, run: RunDir, test_idx: np.ndarray, y: np.ndarray, prob: np.ndarray) -> dict:
    """test_predictions.csv and .parquet (MEDS form) and test_metrics.json: the one evaluation on the test set."""
    pd.DataFrame({"sample": test_idx, "y": y, "prob": prob}).to_csv(folder / layout.TEST_PREDICTIONS, index=False)
    write_meds_predictions(folder / layout.TEST_PREDICTIONS_MEDS, run.dataset(), test_idx, prob)
    test_metrics = metrics.evaluate(prob, y)
    (folder / layout.TEST_METRICS).write_text(json.dumps(
        {**test_metrics, "provenance": "held-out test set, evaluated once; never seen by tuning or CV"},
        indent=2) + "\n")
    return test_metrics


def store_external(cfg: PipelineConfig, run_dir: RunDir) -> dict:
    """`[model] external`: the user's model checked on the pipeline's input, stored in model/ and evaluated
    once on the test set (nothing is trained)."""
    data, _, _ = training.fit_inputs(cfg, run_dir)
    model, record = external.load_user(cfg.model, run_dir.path)
    test_idx = np.array(sorted(run_dir.split()["test"]))
    logits = external.check(model, data.x[test_idx], f"[model] external = {cfg.model.external!r}")
    prob = torch.softmax(logits, dim=1)[:, 1].double().numpy()
    with rundir.atomic_path(run_dir.model_dir) as folder:
        external.store(folder, cfg.model)
        (folder / layout.MODEL_META).write_text(json.dumps({
            "external": record, "params": {}, "n_features": int(data.x.shape[2]), "n_time": int(data.x.shape[1]),
            "n_test": len(test_idx), "params_source": f"{record['source']} (trained elsewhere)"},
            indent=2, sort_keys=True) + "\n")
        return write_test_results(folder, run_dir, test_idx, data.y[test_idx], prob)


def write_meds_predictions(path: Path, ds, samples: np.ndarray, prob: np.ndarray) -> None:
    """The test set's predictions in MEDS's prediction form (meds-evaluation scores it): one row a sample,
    predicted at the end of its window (ICU intime + window_hours), threshold 0.5."""
    window = np.timedelta64(int(ds.attrs["cohort_config"]["window_hours"]), "h")
    intime = ds.intime.values[samples].astype("datetime64[s]") if "intime" in ds.coords \
        else np.full(len(samples), np.datetime64("NaT"))
    pq.write_table(pa.table({
        "subject_id": pa.array(ds.subject_id.values[samples], pa.int64()),
        "prediction_time": pa.array((intime + window).astype("datetime64[us]")),
        "boolean_value": pa.array(ds.y.values[samples] == 1),
        "predicted_boolean_value": pa.array(prob >= 0.5),
        "predicted_boolean_probability": pa.array(prob, pa.float32())}), path)


def final_epochs(cfg: PipelineConfig, run_dir: RunDir) -> tuple[int, str]:
    if cfg.train.epochs > 0:
        return cfg.train.epochs, "[train] epochs"
    summary = run_dir.cv_summary()
    if summary is None:
        raise ConfigError(f"{run_dir.cv_file(layout.CV_SUMMARY)}: not found; run `cv` first or set [train] epochs")
    return summary["best_epoch"], f"{run_dir.cv_file(layout.CV_SUMMARY)} (lowest mean held-out loss)"


def train(cfg: PipelineConfig, run_dir: RunDir) -> None:
    cfg.model.check()
    if cfg.model.external:
        result = store_external(cfg, run_dir)
        log.info("train: the external model %s, test set AUROC %.4f, AUPRC %.4f (evaluated once; not trained here)",
                 cfg.model.external, result["auroc"], result["auprc"])
        return
    _, params, params_source = training.fit_inputs(cfg, run_dir)
    epochs, epochs_source = final_epochs(cfg, run_dir)
    log.info("train: %d epochs (from %s), parameters from %s", epochs, epochs_source, params_source)
    provenance = {"params_source": params_source, "epochs_source": epochs_source}
    (result,) = run_array(cfg, run_dir, "train", train_final, [
        (str(run_dir.path), params, epochs, stage_seed(cfg, "train"), cfg.run.workers, provenance)])
    log.info("train: test set AUROC %.4f, AUPRC %.4f, F1 %.4f (evaluated once)", result["auroc"], result["auprc"],
             result["f1"])
