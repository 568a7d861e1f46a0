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


def budget(points, path, targets=(), extrapolation=None, title="test accuracy against minutes a run"):
    """Accuracy against time on a log2 axis: points are dicts with name, minutes, mean, min, max (a bar over the
    seeds) and named (False: grey and unlabelled); targets are (minutes, accuracy) corners of the regions to reach (up and to the left of each);
    extrapolation is ((minutes, accuracy), (minutes, accuracy)), drawn dotted."""
    fig, ax = plt.subplots(figsize=(9, 5.5))
    labelled = 0
    for p in sorted(points, key=lambda p: p["minutes"]):  # the named ones (the frontier, say) in colour; the rest grey
        named = p.get("named", True)
        ax.errorbar(p["minutes"], p["mean"], yerr=[[p["mean"] - p["min"]], [p["max"] - p["mean"]]], fmt="o",
                    color="C0" if named else "0.6", ms=4 if named else 3, capsize=2, zorder=3 if named else 2)
        if named:  # below and above in turn, so that neighbours' labels do not overlap
            ax.annotate(f"{p['name']} ({p['mean']:.2f}%)", (p["minutes"], p["mean"]), fontsize=7,
                        xytext=(4, -10 if labelled % 2 == 0 else 6), textcoords="offset points")
            labelled += 1
    for i, (minutes, accuracy) in enumerate(targets):
        color = f"C{i + 1}"
        ax.fill_between([0.1, minutes], accuracy, 100, color=color, alpha=0.1)
        ax.plot([0.1, minutes, minutes], [accuracy, accuracy, 100], "--", color=color, lw=1,
                label=f"target: >= {accuracy:g}% in <= {minutes:g} min")
    if extrapolation:
        (x0, y0), (x1, y1) = extrapolation
        ax.plot([x0, x1], [y0, y1], ":", color="C3", label=f"extrapolated: {y1:g}% at {x1:.0f} min")
    if targets or extrapolation:
        ax.legend(fontsize=7, loc="lower right")
    xs = [p["minutes"] for p in points] + [m for m, _ in targets] + ([extrapolation[1][0]] if extrapolation else [])
    ys = [p["min"] for p in points] + [a for _, a in targets]
    ax.set_xscale("log", base=2)
    ticks = [t for t in (5, 10, 15, 30, 60, 120, 240, 480) if min(xs) / 1.3 <= t <= max(xs) * 1.3]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set(xlim=(min(xs) / 1.3, max(xs) * 1.3), ylim=(min(ys) - 0.5, max(ys) + 0.7), xlabel="minutes a run (log scale)",
           ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)
