"""Matplotlib figures for runs: curves, overlays, confusion matrices, seed spreads, sweeps."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def curves(history, path, title=""):
    """Loss and accuracy per epoch, train vs validation."""
    return overlay({"": history}, path, title)


def overlay(runs: dict, path, title=""):
    """Curves of several runs ({label: history rows}) on one loss and one accuracy panel."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (label, history) in enumerate(runs.items()):
        color = f"C{i}"
        epochs = [r["epoch"] for r in history]
        prefix = f"{label} " if label else ""
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            ax.plot(epochs, [r[f"train_{key}"] for r in history], "--", color=color, label=f"{prefix}train")
            if any(np.isfinite(r[f"val_{key}"]) for r in history):
                ax.plot(epochs, [r[f"val_{key}"] for r in history], "-", color=color, label=f"{prefix}val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_runs(run_dirs, path):
    runs = {Path(d).name: json.loads((Path(d) / "history.json").read_text()) for d in run_dirs}
    return overlay(runs, path, title=", ".join(runs) if len(runs) > 1 else next(iter(runs)))


def confusion(matrix, classes, path, title="confusion matrix (rows: true, columns: predicted)"):
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    fig.colorbar(im)
    ax.set_title(title)
    return _save(fig, path)


def spread(values, labels, path, title="test accuracy per seed"):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(labels, values, "o")
    ax.axhline(np.mean(values), color="C1", label=f"mean {np.mean(values):.2f}% (std {np.std(values):.2f})")
    ax.set(xlabel="seed", ylabel="test accuracy (%)", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def bars(names, values, path, ylabel="test accuracy (%)", title=""):
    fig, ax = plt.subplots(figsize=(max(5, len(names) * 0.9), 4))
    ax.bar(range(len(names)), values, color="C0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    return _save(fig, path)
