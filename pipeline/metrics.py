"""Held-out classification metrics of probabilities `prob` (of class 1) against labels `y`.

Written out in numpy (no scikit-learn dependency); tests check them against brute-force definitions.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import InputError

THRESHOLD = 0.5
NAMES = ("auroc", "auprc", "f1", "precision", "recall", "accuracy", "loss")


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann–Whitney) formula, ties get average ranks."""
    score, label = np.asarray(score, float), np.asarray(label).astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based mean rank of each distinct score
    rank_sum = average_rank[inverse][label].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(score: np.ndarray, label: np.ndarray) -> float:
    """Average precision: Σ (R_k − R_{k−1}) · P_k over the distinct score thresholds, highest first."""
    if not np.asarray(label).astype(bool).any():
        return float("nan")
    recall, precision = pr_curve(score, label)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def at_threshold(prob: np.ndarray, y: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of ``prob ≥ threshold``; 0 where a ratio is 0/0."""
    pred, y = np.asarray(prob) >= threshold, np.asarray(y).astype(bool)
    tp, fp, fn = int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": float((pred == y).mean())}


def cross_entropy(prob: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(prob, float), 1e-12, 1 - 1e-12)
    y = np.asarray(y, float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def evaluate(prob: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """All held-out metrics (NAMES) from predictions alone, so they can be recomputed from a saved table.

    A probability that is not finite is an error, not a number to rank: NaN scores tie, and AUROC would
    come out 0.5 (or 0.83 with some NaN) for predictions of no model."""
    bad = int((~np.isfinite(np.asarray(prob, float))).sum())
    if bad:
        raise InputError(f"{bad} of {len(prob)} predicted probabilities are not finite (NaN or ±inf): the model's "
                         "output is no probability (a diverged training, or a model that returns NaN)")
    return {"auroc": auroc(prob, y), "auprc": auprc(prob, y), **at_threshold(prob, y),
            "loss": cross_entropy(prob, y)}


def roc_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    tp, fp = _counts_by_threshold(score, label)
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def pr_curve(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, highest threshold first."""
    tp, fp = _counts_by_threshold(score, label)
    return tp / max(tp[-1], 1), tp / (tp + fp)


def _counts_by_threshold(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives of ``score ≥ threshold`` for each distinct score, highest first."""
    score, label = np.asarray(score, float), np.asarray(label).astype(bool)
    order = np.argsort(-score, kind="stable")
    score, label = score[order], label[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tp = np.cumsum(label)[last_of_tie].astype(float)
    return tp, last_of_tie + 1 - tp
