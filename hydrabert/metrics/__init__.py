"""Evaluation metrics: the `evaluate` modules shipped for offline use (`load_metric`), and the default
per-task metrics of `MultiTaskTrainer` (`default_task_metrics`)."""

from __future__ import annotations

from .shipped import METRICS_DIR, load_metric
from .task_metrics import default_task_metrics, evaluation_metrics, similarity_correlations, task_averages

__all__ = [
    "METRICS_DIR",
    "default_task_metrics",
    "evaluation_metrics",
    "load_metric",
    "similarity_correlations",
    "task_averages",
]
