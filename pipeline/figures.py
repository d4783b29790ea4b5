"""Figures (PNG, matplotlib's Agg backend: no display needed on a compute node): how every figure is saved,
and the model's training curves. The analysis's figures are in pipeline/susceptibility/figures.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipeline.infra.rundir import atomic_path  # noqa: E402


def save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def suptitle(fig: plt.Figure, text: str) -> None:
    """The figure's title, wrapped to the figure's width (a longer one would widen the saved figure past
    its panels, or be cut off where the figure is saved at its own size)."""
    size = plt.rcParams["figure.titlesize"]
    points = matplotlib.font_manager.FontProperties(size=size).get_size_in_points()
    fig.suptitle(textwrap.fill(text, max(20, int(fig.get_figwidth() * 72 / (0.6 * points)))))


def learning_curve(history: pd.DataFrame, path: Path, title: str) -> None:
    """Per epoch: training vs held-out loss (left), held-out AUROC and AUPRC (right)."""
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(history.epoch, history.train_loss, marker=".", label="training (class-balanced draws)")
    ax_loss.plot(history.epoch, history.loss, marker=".", label="held-out fold")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title=f"{title}: loss")
    ax_loss.legend()
    ax_score.plot(history.epoch, history.auroc, marker=".", label="AUROC")
    ax_score.plot(history.epoch, history.auprc, marker=".", label="AUPRC")
    ax_score.set(xlabel="epoch", ylabel="score on the held-out fold", ylim=(0, 1), title=f"{title}: held-out scores")
    ax_score.legend()
    ax_score.grid(alpha=0.3)
    for ax in (ax_loss, ax_score):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save(fig, path)


def training_loss(losses: list[float], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, marker=".")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss (class-balanced draws)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save(fig, path)
