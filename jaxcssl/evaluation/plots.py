"""PNG plots of a run's results.json: accuracy matrices, per-task kNN accuracy over training, LA/WP/TP.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch), so it
works headless and in threads.
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxcssl.evaluation.results import matrix, read_results


def _save(fig: Figure, path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_accuracy_matrix(A: np.ndarray, path: str | os.PathLike, title: str = "accuracy") -> pathlib.Path:
    """Heatmap of A[t, i] (row: after training task t, column: evaluated task i), values in %."""
    A = np.asarray(A, np.float64)
    T = A.shape[0]
    fig = Figure(figsize=(1.0 + 0.6 * T, 0.8 + 0.6 * T))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(100 * A), vmin=0, vmax=100, cmap="viridis")
    for t in range(T):
        for i in range(T):
            if np.isfinite(A[t, i]):
                ax.text(i, t, f"{100 * A[t, i]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if A[t, i] < 0.6 else "black")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    return _save(fig, path)


def plot_task_history(history: Sequence[Mapping[str, Any]], path: str | os.PathLike, key: str = "knn_per_task",
                      title: str = "kNN accuracy per task") -> pathlib.Path:
    """Per-task accuracy (`row[key]`, one value per task) against the global step, one line per task.

    Dashed vertical lines mark where a new task starts (CroMo-Mixup Appendix C.4, Fig. 7).
    """
    rows = [row for row in history if row.get(key) is not None]
    if not rows:
        raise ValueError(f"plot_task_history: no history row has '{key}'")
    steps = np.array([row["step"] for row in rows], np.float64)
    values = np.array([[np.nan if v is None else v for v in row[key]] for row in rows], np.float64)
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for task in range(values.shape[1]):
        seen = np.isfinite(values[:, task])
        if np.any(seen):
            ax.plot(steps[seen], 100 * values[seen, task], marker=".", label=f"task {task}")
    tasks = np.array([row["task"] for row in rows])
    for boundary in np.flatnonzero(np.diff(tasks)) + 1:
        ax.axvline(steps[boundary], color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_task_aware(final: Mapping[str, Mapping[str, Any]], path: str | os.PathLike,
                    title: str = "LA / WP / TP") -> pathlib.Path:
    """Grouped bars of LA, WP and TP (CroMo-Mixup Sec. 2.2) for each protocol in `final` that has them."""
    protocols = [name for name, block in final.items() if all(block.get(m) is not None for m in ("la", "wp", "tp"))]
    if not protocols:
        raise ValueError("plot_task_aware: no protocol in 'final' has la, wp and tp")
    fig = Figure(figsize=(1.5 + 1.6 * len(protocols), 4))
    ax = fig.add_subplot()
    width = 0.8 / 3
    x = np.arange(len(protocols))
    for j, metric in enumerate(("la", "wp", "tp")):
        heights = [100 * final[name][metric] for name in protocols]
        bars = ax.bar(x + (j - 1) * width, heights, width, label=metric.upper())
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, protocols)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_selection(rals: Mapping[str, Any], path: str | os.PathLike) -> pathlib.Path:
    """Online-SSL Fig. 3b: the fraction of RALS's selected samples from the new batch at each local step,
    averaged over the last batches and for the last one (``results["learner"]["rals"]``)."""
    mean, last = np.asarray(rals["new_fraction_mean"], float), np.asarray(rals["new_fraction_last_batch"], float)
    steps = np.arange(1, len(mean) + 1)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.plot(steps, mean, marker=".", label=f"mean of the last {rals['batches_averaged']} batches")
    ax.plot(steps, last, marker=".", linestyle="--", label="last batch")
    ax.set_xlabel("local step")
    ax.set_ylabel("selected from the new batch")
    ax.set_ylim(0, 1)
    ax.set_title("RALS selection")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_run(workdir: str | os.PathLike) -> list[pathlib.Path]:
    """Draws every plot that `W/results.json` has data for into `W/plots/`; returns the files written.

    accuracy_matrix_<name>.png for each matrix, knn_per_task.png from the history, task_aware.png
    from the final LA/WP/TP, rals_selection.png from an online run's selection statistics.
    """
    workdir = pathlib.Path(workdir)
    results = read_results(workdir)
    out = workdir / "plots"
    written = []
    for name in results["matrices"]:
        written.append(plot_accuracy_matrix(matrix(results, name), out / f"accuracy_matrix_{name}.png",
                                            title=f"{name} accuracy (%)"))
    if any(row.get("knn_per_task") is not None for row in results["history"]):
        written.append(plot_task_history(results["history"], out / "knn_per_task.png"))
    if any(all(block.get(m) is not None for m in ("la", "wp", "tp")) for block in results["final"].values()):
        written.append(plot_task_aware(results["final"], out / "task_aware.png"))
    rals = results.get("learner", {}).get("rals")
    if rals and rals["batches_averaged"]:
        written.append(plot_selection(rals, out / "rals_selection.png"))
    return written
