"""The default per-task metrics of `MultiTaskTrainer`: accuracy and macro-F1 for classification, mean squared
error for regression, Spearman and Pearson of the cosine similarities for sentence similarity."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from transformers import EvalPrediction

from ..configuration_hydrabert import HEADLESS_PROBLEM_TYPES
from .shipped import load_metric


def default_task_metrics(model) -> Callable[[str, EvalPrediction], dict]:
    """Accuracy and macro-F1 for classification (via the `evaluate` modules shipped in
    `hydrabert/metrics`), mean squared error for regression.

    `f1` is the usual macro-F1 (scikit-learn's and `evaluate`'s default): the mean over the labels that occur
    in the references or the predictions. `f1_declared_labels` is the mean over every label of the task, so
    that a label absent from both counts as F1 = 0; the two differ only when a split lacks a label that the
    model never predicts either."""
    tasks = model.config.tasks

    def compute(task: str, prediction: EvalPrediction) -> dict:
        logits = np.asarray(prediction.predictions)
        references = np.asarray(prediction.label_ids)
        problem_type = tasks[task]["problem_type"]
        if problem_type == "sentence_similarity":
            return similarity_correlations(logits, references)
        if problem_type == "regression":
            values = logits.squeeze(-1) if logits.ndim > 1 and logits.shape[-1] == 1 else logits
            return {"mse": float(np.mean((values - references) ** 2))}
        declared = list(range(tasks[task]["num_labels"]))
        if problem_type == "multi_label_classification":
            predicted = (logits > 0).astype(int)
            truth = references.astype(int)
            present = np.flatnonzero((predicted | truth).any(axis=0)).tolist() or declared
            accuracy = load_metric("accuracy", "multilabel").compute(
                predictions=predicted.tolist(), references=truth.tolist()
            )
            return {
                "accuracy": accuracy["accuracy"],
                **_macro_f1(predicted, truth, present, declared, "multilabel"),
            }
        keep = references != -100
        predicted = logits.argmax(-1)[keep].tolist()
        truth = references[keep].tolist()
        accuracy = load_metric("accuracy").compute(predictions=predicted, references=truth)
        return {"accuracy": accuracy["accuracy"], **_macro_f1(predicted, truth, None, declared)}

    return compute


def evaluation_metrics(
    task: str, problem_type: str, compute: Callable[[str, EvalPrediction], dict], prediction: EvalPrediction
) -> dict[str, float]:
    """What `MultiTaskTrainer` reports for one task's evaluation: `loss` (the mean of the rows' losses, which
    `prediction_step` returns beside the logits) and what `compute(task, ...)` gives. A sentence-similarity task
    has no loss of one row to average (CoSENT ranks a batch's pairs against each other), so no `loss`."""
    predictions = prediction.predictions
    if not isinstance(predictions, tuple):  # no labels: metrics need them
        return {}
    logits, row_losses = predictions
    counted = row_losses[~np.isnan(row_losses)]
    metrics = {}
    if problem_type not in HEADLESS_PROBLEM_TYPES:
        metrics["loss"] = float(counted.mean()) if counted.size else float("nan")
    metrics.update(compute(task, EvalPrediction(predictions=logits, label_ids=prediction.label_ids)))
    return metrics


def similarity_correlations(similarities, scores) -> dict[str, float]:
    """`spearman` and `pearson`: how the cosine similarities of the pairs rank and follow their gold scores.

    A sentence-similarity task's rows come in pairs, each pair's similarity and score on both its rows: every
    pair is there twice, which leaves both correlations unchanged (ranks of a doubled sample are an affine map
    of the single sample's ranks)."""
    from scipy.stats import pearsonr, spearmanr

    similarities, scores = np.asarray(similarities, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    return {
        "spearman": float(spearmanr(similarities, scores).statistic),
        "pearson": float(pearsonr(similarities, scores).statistic),
    }


def _macro_f1(predicted, truth, present, declared, config_name=None) -> dict[str, float]:
    """`f1` over the labels present in references or predictions (`present`; None: scikit-learn finds them),
    `f1_declared_labels` over every label of the task."""
    metric = load_metric("f1", config_name)
    predicted, truth = np.asarray(predicted).tolist(), np.asarray(truth).tolist()
    return {
        name: metric.compute(predictions=predicted, references=truth, average="macro", labels=labels)["f1"]
        for name, labels in (("f1", present), ("f1_declared_labels", declared))
    }


def task_averages(metrics: dict[str, float], prefix: str, tasks: list[str]) -> dict[str, float]:
    """Mean of each metric (loss, accuracy, f1, spearman, ...) over the tasks that report it: classification
    tasks' accuracy is averaged without a similarity task, which reports Spearman instead."""
    per_metric: dict[str, list[float]] = {}
    for task in tasks:
        head = f"{prefix}_{task}_"
        for key, value in metrics.items():
            if key.startswith(head) and isinstance(value, (int, float)):
                per_metric.setdefault(key[len(head) :], []).append(float(value))
    skip = {"runtime", "samples_per_second", "steps_per_second", "model_preparation_time"}
    return {
        f"{prefix}_average_{name}": float(np.mean(values))
        for name, values in per_metric.items()
        if name not in skip
    }


__all__ = ["default_task_metrics", "evaluation_metrics", "similarity_correlations", "task_averages"]
