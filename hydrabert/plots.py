"""Plots of a run: the learning rate of every layer group, and each task's training loss and evaluation
metrics. `PlotsCallback` writes them as PNG files into the output directory (the model card embeds
them) when training ends and after every evaluation; `save_training_plots` draws them from a saved
`trainer_state.json`'s log history."""

from __future__ import annotations

import logging
import math
import os
import re
from collections import defaultdict

from transformers import TrainerCallback

from .optim import group_learning_rates

logger = logging.getLogger(__name__)

LEARNING_RATE_PLOT = "learning_rates.png"
TASK_METRICS_PLOT = "task_metrics.png"
# Points the callback keeps per layer group: every step of a short run, evenly spaced ones of a long run.
_MAX_RATE_POINTS = 500

Series = dict[str, tuple[list, list]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    return plt


def _series(log_history: list[dict], pattern: str, x_key: str = "step") -> Series:
    regex = re.compile(pattern)
    series: Series = defaultdict(lambda: ([], []))
    for entry in log_history:
        for key, value in entry.items():
            match = regex.fullmatch(key)
            if match and isinstance(value, (int, float)) and x_key in entry:
                xs, ys = series[match.group(1)]
                xs.append(entry[x_key])
                ys.append(value)
    return dict(series)


def learning_rate_series(
    log_history: list[dict], recorded: dict[int, dict[str, float]] | None = None
) -> Series:
    """`{group: (steps, learning rates)}` from `recorded` (`{step: {group: lr}}`, what `PlotsCallback`
    reads off the optimizer, so a run shorter than `logging_steps` still has its curve), and from the
    logged `lr/<group>` keys for the steps before recording began."""
    recorded = recorded or {}
    first_recorded = min(recorded, default=math.inf)
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    for group, (steps, rates) in _series(log_history, r"lr/(.+)").items():
        for step, rate in zip(steps, rates, strict=True):
            if step < first_recorded:  # logged before recording began (a resumed run's first part)
                by_step[step][group] = rate
    for step, rates in recorded.items():
        by_step[step].update(rates)
    series: Series = defaultdict(lambda: ([], []))
    for step in sorted(by_step):
        for group, rate in by_step[step].items():
            series[group][0].append(step)
            series[group][1].append(rate)
    return dict(series)


def _layer_order(name: str) -> tuple[int, int]:
    if name == "embeddings":
        return (0, 0)
    if name.startswith("layer_"):
        return (1, int(name.split("_")[1]))
    return (2, 0)


def plot_learning_rates(series: Series, path: str) -> str | None:
    """One line per layer group (embeddings, layer_0..layer_{L-1}, heads) against the step."""
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted(series, key=_layer_order)
    colours = plt.cm.viridis([i / max(1, len(names) - 1) for i in range(len(names))])
    log_scale = any(y > 0 for _, ys in series.values() for y in ys)
    for name, colour in zip(names, colours, strict=True):
        xs, ys = series[name]
        if log_scale:  # a warmup's or a schedule's zero has no place on a log axis
            ys = [y if y > 0 else math.nan for y in ys]
        ax.plot(
            xs,
            ys,
            label=name,
            color=colour,
            linewidth=2 if name == "heads" else 1.2,
            marker="." if len(xs) < 3 else None,
        )
    if log_scale:
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
    metric_lines: Series = {}
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
    for axis, lines, xlabel, ylabel, title, marker in (
        (left, losses, "optimizer step", "training loss", "Training loss per task", None),
        (right, metric_lines, "epoch", "score", "Evaluation per task", "o"),
    ):
        for name, (xs, ys) in sorted(lines.items()):
            axis.plot(xs, ys, marker=marker, label=name)
        axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
        axis.grid(alpha=0.3)
        if lines:
            axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_training_plots(
    log_history: list[dict], output_dir: str, recorded_rates: dict[int, dict[str, float]] | None = None
) -> list[str]:
    """Writes every plot the history supports; returns the file names written."""
    os.makedirs(output_dir, exist_ok=True)
    written = []
    rates = learning_rate_series(log_history, recorded_rates)
    if plot_learning_rates(rates, os.path.join(output_dir, LEARNING_RATE_PLOT)):
        written.append(LEARNING_RATE_PLOT)
    else:
        logger.info(
            "%s not written: no learning rate was logged or recorded (no optimizer step yet)",
            LEARNING_RATE_PLOT,
        )
    if plot_task_metrics(log_history, os.path.join(output_dir, TASK_METRICS_PLOT)):
        written.append(TASK_METRICS_PLOT)
    return written


class PlotsCallback(TrainerCallback):
    """Writes `learning_rates.png` and `task_metrics.png` into `args.output_dir` when training ends and
    after each evaluation (main process only). The learning rates are read off the optimizer's parameter
    groups at each step, not only from the logs, so a run shorter than `logging_steps` gets its curve too."""

    def __init__(self):
        self.recorded_rates: dict[int, dict[str, float]] = {}
        self.files: list[str] = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        # After optimizer.step(), before the scheduler's: the rates this step used (global_step is
        # incremented after this event).
        step, last = state.global_step + 1, state.max_steps
        if optimizer is None or not (
            step == 1 or step == last or step % max(1, last // _MAX_RATE_POINTS) == 0
        ):
            return
        # MultiTaskTrainer names its groups `layer_3`, `layer_3.no_decay`, ...: one line per depth.
        self.recorded_rates[step] = group_learning_rates(optimizer, name_unnamed=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._save(args, state)

    def on_evaluate(self, args, state, control, **kwargs):
        self._save(args, state)

    def _save(self, args, state) -> None:
        if state.is_world_process_zero and args.output_dir:
            self.files = save_training_plots(state.log_history, args.output_dir, self.recorded_rates)


__all__ = [
    "PlotsCallback",
    "learning_rate_series",
    "plot_learning_rates",
    "plot_task_metrics",
    "save_training_plots",
]
