"""Data, split and the training loop shared by tune-model, cv and train.

The split: a stratified test set (fixed by the seed, saved as ``split.json``) that tuning and CV
never see, and stratified folds on the rest. A MEDS dataset's own split (dataset.zarr ``meds_split``),
when it has one and ``cv.meds_split`` is on, fixes the test set instead: its held_out subjects; train
and tuning subjects form the folds (docs/methods.md, "The split"). Training draws class-balanced batches with a
WeightedRandomSampler (weights 1/class count, as many draws as training samples) and evaluates on
held-out data only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from pipeline import metrics
from pipeline.config import ConfigError, ModelParams, PipelineConfig
from pipeline.data.record import feature_stats
from pipeline.infra import layout, rundir
from pipeline.infra.launch import tuned
from pipeline.infra.rundir import RunDir
from pipeline.model import robust
from pipeline.model.archs import build, make_optimizer

log = logging.getLogger(__name__)


# ---- data and split --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Data:
    x: torch.Tensor  # (n, time, feature) float32
    y: np.ndarray  # (n,) int
    held_out: np.ndarray | None = None  # (n,) bool: the MEDS split's held_out subjects; None: no MEDS split
    records: robust.Records | None = None  # the record, for robust training only


HELD_OUT = 2  # meds_split's code of "held_out" (pipeline/data/meds.py SPLITS)


def load_data(run_dir: Path, meds_split: bool = True, records: bool = False) -> Data:
    """The model's input and labels of the run's dataset.zarr (and, for robust training, the record)."""
    ds = rundir.RunDir(run_dir).dataset()
    held_out = ds.meds_split.values == HELD_OUT if meds_split and "meds_split" in ds else None
    kept = None
    if records:
        if "value" not in ds or "count" not in ds:
            raise ConfigError(f"[model] robust: {Path(run_dir) / layout.DATASET} keeps no record (value, count); "
                              "prepare it again with this version")
        kept = robust.Records(ds["value"].values.astype(np.float64), ds["count"].values, feature_stats(ds))
    return Data(torch.from_numpy(np.ascontiguousarray(ds.x.values, dtype=np.float32)), ds.y.values.astype(np.int64),
                held_out, kept)


def make_split(y: np.ndarray, test_fraction: float, folds: int, seed: int,
               held_out: np.ndarray | None = None) -> dict:
    """Stratified: per class, a shuffled share goes to the test set, the rest round-robin to folds. With
    `held_out` (the MEDS split), the test set is those samples and only the folds are drawn."""
    rng = np.random.default_rng(seed)
    test, fold_of = [], np.full(len(y), -1)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        if held_out is None:
            n_test = int(round(test_fraction * len(members)))
            test.extend(members[:n_test].tolist())
            rest = members[n_test:]
        else:
            test.extend(members[held_out[members]].tolist())
            rest = members[~held_out[members]]
        fold_of[rest] = (np.arange(len(rest)) + int(rng.integers(folds))) % folds
    return {"seed": seed, "test_fraction": test_fraction, "folds": folds, "test": sorted(test),
            "fold": [np.flatnonzero(fold_of == k).tolist() for k in range(folds)],
            "test_from": "project" if held_out is None else "meds"}


def fit_inputs(cfg: PipelineConfig, run_dir: RunDir) -> tuple[Data, dict, str]:
    """What `cv` and `train` start from: the data, the split (made, or checked against the data and the
    config), and the model parameters as a dict (tune-model's when it ran) with where they came from."""
    cfg.model.check()  # in the driver: a bad [model] is one line before any task starts
    params, source = tuned(run_dir, "tune-model", cfg.model)
    data = load_data(run_dir.path, cfg.cv.meds_split, records=params.robust != "none")
    ensure_split(run_dir, data.y, cfg.cv.test_fraction, cfg.cv.folds, cfg.run.seed, remake=run_dir.forced,
                 held_out=data.held_out)
    searched = cfg.tune_model.archs or [cfg.model.arch]
    if params.arch not in searched:  # tuning wins (docs/methods.md §2), but not silently
        log.warning("%s chose arch %s, the config asks for %s: the tuned %s is used; redo `tune-model --force` "
                    "to tune %s", run_dir.tuning_file("tune-model"), params.arch, " or ".join(searched), params.arch,
                    " or ".join(searched))
    return data, dataclasses.asdict(params), source


def ensure_split(run_dir: RunDir, y: np.ndarray, test_fraction: float, folds: int, seed: int,
                 remake: bool = False, held_out: np.ndarray | None = None) -> dict:
    """The run's split, made once and saved. A later stage with other settings or another cohort is an
    error naming the difference — unless it was forced (`remake`): then the split is made again, and the
    stages after it see their input changed."""
    path = run_dir / layout.SPLIT
    if path.exists():
        split = run_dir.split()  # checked: no sample in two places
        differ = split_differences(split, len(y), seed, test_fraction, folds, held_out)
        if not differ:
            return split
        if not remake:
            raise ConfigError(f"{path}: {'; '.join(differ)}; redo the split and every stage after it with "
                              "`python -m pipeline run --force`, or use a new run directory")
        log.warning("%s: %s; made again (forced)", path, "; ".join(differ))
    pool = y if held_out is None else y[~held_out]
    if min(np.bincount(pool, minlength=2)) < folds + 1:
        where = "" if held_out is None else " outside the MEDS split's held_out subjects"
        raise ConfigError(f"[cv] folds = {folds}: the smaller class has only {min(np.bincount(pool, minlength=2))} "
                          f"samples{where}")
    if held_out is not None and not held_out.any():
        raise ConfigError("[cv] meds_split = true: the MEDS split holds no held_out subject of the cohort; "
                          "set cv.meds_split = false for the project's own test set")
    if held_out is not None and len(np.unique(y[held_out])) < 2:  # the test AUROC would be NaN
        raise ConfigError(f"[cv] meds_split = true: the MEDS split's {int(held_out.sum())} held_out samples are "
                          f"of one class only (y = {int(y[held_out][0])}); set cv.meds_split = false for the "
                          "project's own test set")
    split = make_split(y, test_fraction, folds, seed, held_out)
    log.info("split: %d test samples (%s), %d folds of %d", len(split["test"]),
             "the MEDS split's held_out subjects" if held_out is not None else f"{test_fraction:.0%} stratified",
             folds, len(y) - len(split["test"]))
    rundir.write_json(path, split)
    return split


def split_differences(split: dict, samples: int, seed: int, test_fraction: float, folds: int,
                      held_out: np.ndarray | None = None) -> list[str]:
    """How a saved split differs from the one asked for, in words (empty: it is the same)."""
    made_for = sum(map(len, split["fold"])) + len(split["test"])
    differ = [f"made for {made_for} samples, dataset.zarr holds {samples} (the cohort changed)"] \
        if made_for != samples else []
    if not differ and max(i for part in (split["test"], *split["fold"]) for i in part) >= samples:
        differ.append(f"it names samples past the {samples} of dataset.zarr")
    test_from = "project" if held_out is None else "meds"
    if split.get("test_from", "project") != test_from:
        differ.append(f"its test set is the {split.get('test_from', 'project')}'s, the run asks for the "
                      f"{test_from}'s (cv.meds_split)")
    elif held_out is not None and sorted(split["test"]) != np.flatnonzero(held_out).tolist():
        differ.append("its test set is not the MEDS split's held_out subjects")
    for key, wanted in (("seed", seed), ("test_fraction", test_fraction), ("folds", folds)):
        if split[key] != wanted:
            differ.append(f"made with {key} = {split[key]!r}, the config asks for {wanted!r}")
    return differ


def fold_indices(split: dict, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) sample indices of a fold; the test set is in neither."""
    held_out = np.array(split["fold"][fold])
    train = np.sort(np.concatenate([np.array(f) for k, f in enumerate(split["fold"]) if k != fold]))
    return train, held_out


def non_test_indices(split: dict) -> np.ndarray:
    return np.sort(np.concatenate([np.array(f) for f in split["fold"]]))


# ---- training --------------------------------------------------------------------------------------

def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(workers: int) -> None:
    """Share the CPU among parallel workers (Slurm says how many CPUs this task has)."""
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or max(1, (os.cpu_count() or 1) // max(1, workers))
    torch.set_num_threads(cpus)


class Trainer:
    """One model, its optimizer and its class-balanced sampler; epochs can be run a few at a time."""

    def __init__(self, data: Data, train_idx: np.ndarray, params: ModelParams, seed: int):
        self.data, self.params = data, params
        self.train_idx = np.asarray(train_idx)
        torch.manual_seed(seed)
        self.device = device()
        self.model = build(params, n_features=data.x.shape[2], n_time=data.x.shape[1]).to(self.device)
        self.optimizer = make_optimizer(self.model, params)
        self.loss_fn = nn.CrossEntropyLoss()
        y = data.y[self.train_idx]
        weights = 1.0 / np.bincount(y, minlength=2)[y]
        self.generator = torch.Generator().manual_seed(seed)
        sampler = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(y),
                                        replacement=True, generator=self.generator)
        tensors = [data.x[self.train_idx], torch.as_tensor(y)]
        self.perturb = None
        if params.robust != "none":  # the batch also names its samples, whose records are edited
            if data.records is None:
                raise ConfigError(f"[model] robust = {params.robust!r}: the training data holds no record")
            self.perturb = robust.Perturb(params.robust, params.robust_share, params.robust_edits, data.records, seed)
            tensors.append(torch.as_tensor(self.train_idx))
        self.loader = DataLoader(TensorDataset(*tensors), batch_size=params.batch_size, sampler=sampler)
        self.epoch = 0

    def train_epoch(self) -> float:
        """One pass of len(train) class-balanced draws; returns the mean training loss."""
        self.model.train()
        total, n = 0.0, 0
        for xb, yb, *index in self.loader:
            if self.perturb is not None:
                xb = self.perturb(self.model, index[0].numpy(), xb, yb)
            xb, yb = xb.to(self.device), yb.to(self.device)
            self.optimizer.zero_grad()
            loss = self.loss_fn(self.model(xb), yb)
            loss.backward()
            self.optimizer.step()
            total += loss.item() * len(yb)
            n += len(yb)
        self.epoch += 1
        return total / max(n, 1)

    @torch.no_grad()
    def predict(self, idx: np.ndarray, batch: int = 1024) -> np.ndarray:
        """Probability of class 1 for samples `idx` (eval mode: dropout off)."""
        self.model.eval()
        probs = []
        for start in range(0, len(idx), batch):
            xb = self.data.x[idx[start:start + batch]].to(self.device)
            probs.append(torch.softmax(self.model(xb), dim=1)[:, 1].cpu().numpy())
        # float64, so that a saved table (CSV) round-trips exactly and metrics can be recomputed from it
        return np.concatenate(probs).astype(np.float64) if probs else np.zeros(0)

    def state(self) -> dict:
        state = {"epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        if self.perturb is not None:
            state["robust_rng"] = self.perturb.rng.bit_generator.state
        return state

    def load_state(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.perturb is not None and "robust_rng" in state:
            self.perturb.rng.bit_generator.state = state["robust_rng"]


def fit(trainer: Trainer, held_out: np.ndarray, epochs: int,
        on_epoch: Callable[[int, dict, np.ndarray], None] | None = None) -> list[dict]:
    """Train to `epochs` (from wherever the trainer is), evaluating on `held_out` after every epoch."""
    history = []
    while trainer.epoch < epochs:
        train_loss = trainer.train_epoch()
        prob = trainer.predict(held_out)
        row = {"epoch": trainer.epoch, "train_loss": train_loss, **metrics.evaluate(prob, trainer.data.y[held_out])}
        history.append(row)
        if on_epoch is not None:
            on_epoch(trainer.epoch, row, prob)
    return history
