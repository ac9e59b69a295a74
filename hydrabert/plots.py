"""Plots of a run, drawn from `trainer.state.log_history`: the learning rate of every layer group,
and each task's training loss and evaluation metrics. PNG files in the output directory (the model
card embeds them)."""

from __future__ import annotations

import os
import re
from collections import defaultdict

LEARNING_RATE_PLOT = "learning_rates.png"
TASK_METRICS_PLOT = "task_metrics.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    return plt


def _series(log_history: list[dict], pattern: str, x_key: str = "step") -> dict[str, tuple[list, list]]:
    regex = re.compile(pattern)
    series: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for entry in log_history:
        for key, value in entry.items():
            match = regex.fullmatch(key)
            if match and isinstance(value, (int, float)) and x_key in entry:
                xs, ys = series[match.group(1)]
                xs.append(entry[x_key])
                ys.append(value)
    return dict(series)


def _layer_order(name: str) -> tuple[int, int]:
    if name == "embeddings":
        return (0, 0)
    if name.startswith("layer_"):
        return (1, int(name.split("_")[1]))
    return (2, 0)


def plot_learning_rates(log_history: list[dict], path: str) -> str | None:
    """One line per layer group (embeddings, layer_0..layer_{L-1}, heads) against the step."""
    series = _series(log_history, r"lr/(.+)")
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted(series, key=_layer_order)
    colours = plt.cm.viridis([i / max(1, len(names) - 1) for i in range(len(names))])
    for name, colour in zip(names, colours, strict=True):
        xs, ys = series[name]
        ax.plot(xs, ys, label=name, color=colour, linewidth=2 if name == "heads" else 1.2)
    if all(y > 0 for _, ys in series.values() for y in ys):
        ax.set_yscale("log")  # layer-wise decay is geometric: equal ratios read as equal gaps
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate per layer group")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_task_metrics(log_history: list[dict], path: str) -> str | None:
    """Left: each task's training loss; right: each task's evaluation accuracy/F1 per epoch."""
    losses = _series(log_history, r"loss/(.+)")
    metric_lines = {}
    for entry in log_history:
        for key, value in entry.items():
            match = re.fullmatch(r"eval_(.+)_(accuracy|f1|mse)", key)
            if match and match.group(1) != "average" and "epoch" in entry:
                xs, ys = metric_lines.setdefault(f"{match.group(1)} {match.group(2)}", ([], []))
                xs.append(entry["epoch"])
                ys.append(value)
    if not losses and not metric_lines:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for task, (xs, ys) in sorted(losses.items()):
        left.plot(xs, ys, label=task)
    left.set(xlabel="optimizer step", ylabel="training loss", title="Training loss per task")
    left.grid(alpha=0.3)
    if losses:
        left.legend(fontsize=8)
    for name, (xs, ys) in sorted(metric_lines.items()):
        right.plot(xs, ys, marker="o", label=name)
    right.set(xlabel="epoch", ylabel="score", title="Evaluation per task")
    right.grid(alpha=0.3)
    if metric_lines:
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_training_plots(log_history: list[dict], output_dir: str) -> list[str]:
    """Writes every plot the history supports; returns the file names written."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for name, plot in ((LEARNING_RATE_PLOT, plot_learning_rates), (TASK_METRICS_PLOT, plot_task_metrics)):
        if plot(log_history, os.path.join(output_dir, name)):
            written.append(name)
    return written


__all__ = ["plot_learning_rates", "plot_task_metrics", "save_training_plots"]
