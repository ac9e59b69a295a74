"""Which checkpoint a run keeps, and when it stops: the selection score and early stopping.

Every evaluation logs `{prefix}_selection_score`: the mean over the evaluated tasks of each task's main metric
(`MAIN_METRICS`: macro-F1 for classification, negative MSE for regression, Spearman for sentence similarity; a
new task kind adds one line),
so that one number says which of a multi-task run's checkpoints is best. It is `metric_for_best_model` unless
the user names another metric.

`early_stopping_patience` uses transformers' own parts: `load_best_model_at_end`, `metric_for_best_model`
and `EarlyStoppingCallback`, whose patience count is saved in each checkpoint's `trainer_state.json`
(`stateful_callbacks`) and restored on resume (`restore_callback_states_from_checkpoint`). The subclass here
adds two things: evaluations made outside training (a script's final `evaluate()` of the kept model) do not
count, and with gradual unfreezing nothing is judged until the last encoder layer has been unfrozen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
from transformers import EarlyStoppingCallback
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

logger = logging.getLogger(__name__)

SELECTION_METRIC = "selection_score"

# problem_type -> (the task's main metric, as default_task_metrics names it; its sign in the selection score,
# so that higher is better for every kind).
MAIN_METRICS: dict[str, tuple[str, float]] = {
    "single_label_classification": ("f1", 1.0),
    "multi_label_classification": ("f1", 1.0),
    "regression": ("mse", -1.0),
    "sentence_similarity": ("spearman", 1.0),
}


def is_selection_metric(name: str | None) -> bool:
    """True for `selection_score` and `eval_selection_score` (how metric_for_best_model may name it)."""
    return name in (SELECTION_METRIC, f"eval_{SELECTION_METRIC}")


def main_metrics(task_kinds: Mapping[str, str]) -> dict[str, tuple[str, float]]:
    """`{task: (metric, sign)}`; raises ValueError naming a task whose kind has no main metric."""
    unknown = {task: kind for task, kind in task_kinds.items() if kind not in MAIN_METRICS}
    if unknown:
        raise ValueError(
            f"{SELECTION_METRIC} averages each task's main metric, but task(s) {unknown} are of a kind without "
            f"one (known: {sorted(MAIN_METRICS)}); add it to hydrabert.selection.MAIN_METRICS or set "
            "metric_for_best_model to a metric the evaluation reports"
        )
    return {task: MAIN_METRICS[kind] for task, kind in task_kinds.items()}


def describe_selection_score(task_kinds: Mapping[str, str]) -> str:
    """`mean over tasks of sentiment f1, price -mse`: what the score averages, for logs and the card."""
    parts = []
    for task, (metric, sign) in main_metrics(task_kinds).items():
        parts.append(f"{task} {'-' if sign < 0 else ''}{metric}")
    return "mean over tasks of " + ", ".join(parts)


def selection_score(
    metrics: Mapping[str, float], prefix: str, task_kinds: Mapping[str, str], required: bool = False
) -> dict[str, float]:
    """`{f"{prefix}_selection_score": mean of sign * metrics[f"{prefix}_{task}_{metric}"]}`, or `{}` when a
    task's kind or main metric is missing (a custom compute_metrics may not report it). With `required`
    (the score selects checkpoints), a missing one raises ValueError instead, naming task and metric."""
    try:
        chosen = main_metrics(task_kinds)
    except ValueError:
        if required:
            raise
        return {}
    values = []
    for task, (metric, sign) in chosen.items():
        value = metrics.get(f"{prefix}_{task}_{metric}")
        if value is None:
            if required:
                reported = sorted(k for k in metrics if k.startswith(f"{prefix}_{task}_"))
                raise ValueError(
                    f"{SELECTION_METRIC} needs each task's main metric, but task {task!r} ({task_kinds[task]}) "
                    f"reported no {metric!r} (it reported {reported}): return it from compute_metrics, or set "
                    "metric_for_best_model to a metric the evaluation reports"
                )
            return {}
        values.append(sign * float(value))
    return {f"{prefix}_{SELECTION_METRIC}": float(np.mean(values))} if values else {}


class HydraEarlyStoppingCallback(EarlyStoppingCallback):
    """transformers' `EarlyStoppingCallback` (stop when `metric_for_best_model` has not improved, by more than
    `early_stopping_threshold`, for `early_stopping_patience` evaluations; its count travels in checkpoints),
    judged only on evaluations made while training, and only after epoch `judge_after_epoch` (gradual
    unfreezing: the epoch the last encoder layer is unfrozen; earlier evaluations still compete for best)."""

    def __init__(
        self,
        early_stopping_patience: int = 1,
        early_stopping_threshold: float | None = 0.0,
        judge_after_epoch: float = 0.0,
    ):
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.judge_after_epoch = judge_after_epoch
        self._training = False  # not saved: set by on_train_begin, also after a resume restored the count

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self._training = True
        # A resume restores this callback with the checkpoint's settings; this run's arguments win (the count
        # carries on).
        if getattr(args, "early_stopping_patience", None) is not None:
            self.early_stopping_patience = args.early_stopping_patience
            self.early_stopping_threshold = args.early_stopping_threshold
        cap = state.num_train_epochs
        if self.judge_after_epoch and cap and self.judge_after_epoch >= cap:
            logger.warning(
                "early_stopping_patience will not stop this run: gradual unfreezing releases the last encoder "
                "layer at epoch %s, and training ends at epoch %s",
                self.judge_after_epoch,
                cap,
            )

    def on_train_end(self, args, state, control, **kwargs):
        self._training = False

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if not self._training:
            return
        if (state.epoch or 0.0) <= self.judge_after_epoch + 1e-9:
            logger.info(
                "early stopping: not judging the evaluation at epoch %.2f (the encoder is fully unfrozen at epoch "
                "%s)",
                state.epoch or 0.0,
                self.judge_after_epoch,
            )
            return
        super().on_evaluate(args, state, control, metrics, **kwargs)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            message = (
                f"{args.metric_for_best_model} has not improved on {state.best_metric} (step "
                f"{state.best_global_step}) for {self.early_stopping_patience_counter} evaluation(s): stopping at "
                f"step {state.global_step} (epoch {state.epoch:.2f})"
            )
            logger.info("early stopping: %s", message)
            if state.is_world_process_zero:
                state.log_history.append({"early_stopping": message, "step": state.global_step})

    def state(self) -> dict:
        saved = super().state()
        saved["args"]["judge_after_epoch"] = self.judge_after_epoch
        return saved


def set_up_checkpoint_selection(args) -> None:
    """Run by `MultiTaskTrainingArguments.__post_init__` before `TrainingArguments` checks the values: with
    `early_stopping_patience`, evaluate (every epoch unless eval_strategy says otherwise), save a checkpoint at
    each evaluation and load the best at the end; and whatever needs `metric_for_best_model` gets the selection
    score by default (transformers' default, `loss`, is no key of a multi-task evaluation, whose losses are
    `eval_<task>_loss` and `eval_average_loss`). Bad values raise ValueError naming the field."""
    patience = args.early_stopping_patience
    if patience is not None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"early_stopping_patience must be an integer >= 1 (or None), got {patience!r}")
        threshold = args.early_stopping_threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 <= threshold < math.inf
        ):
            raise ValueError(f"early_stopping_threshold must be a finite number >= 0, got {threshold!r}")
        if IntervalStrategy(args.eval_strategy) == IntervalStrategy.NO:
            args.eval_strategy = IntervalStrategy.EPOCH.value
        save = SaveStrategy(args.save_strategy)
        if save == SaveStrategy.NO:
            raise ValueError(
                "early_stopping_patience loads the best checkpoint at the end, but save_strategy='no' saves "
                "none: leave save_strategy unset (checkpoints follow the evaluations) or use 'best'"
            )
        if save != SaveStrategy.BEST:  # 'best' saves at each improvement: what loading the best needs
            evaluation = IntervalStrategy(args.eval_strategy)
            steps = args.eval_steps or args.logging_steps  # transformers' own fallback for eval_steps
            if save.value != evaluation.value or (
                evaluation == IntervalStrategy.STEPS and args.save_steps != steps
            ):
                logger.info(
                    "early_stopping_patience: saving a checkpoint at every evaluation (%s)", evaluation.value
                )
            args.save_strategy = evaluation.value
            if evaluation == IntervalStrategy.STEPS:
                args.save_steps = steps
        args.load_best_model_at_end = True
    if args.restore_callback_states_from_checkpoint is None:
        args.restore_callback_states_from_checkpoint = patience is not None
    needs_metric = (
        args.load_best_model_at_end
        or SaveStrategy(args.save_strategy) == SaveStrategy.BEST
        or SchedulerType(args.lr_scheduler_type) in (SchedulerType.REDUCE_ON_PLATEAU, SchedulerType.GREEDY)
    )
    if needs_metric and args.metric_for_best_model is None:
        args.metric_for_best_model = SELECTION_METRIC


def early_stopping_callbacks(model, args, callbacks, unfreezing=None) -> list:
    """For `MultiTaskTrainer.__init__`, before any training: checks that every task has a main metric when the
    selection score picks checkpoints, and, with `early_stopping_patience`, returns the callback that stops
    (judged only after `unfreezing` has released the last encoder layer)."""
    if is_selection_metric(args.metric_for_best_model):
        main_metrics({name: spec["problem_type"] for name, spec in model.config.tasks.items()})
    if args.early_stopping_patience is None:
        return []
    if any(
        isinstance(c, EarlyStoppingCallback) or (isinstance(c, type) and issubclass(c, EarlyStoppingCallback))
        for c in callbacks
    ):
        raise ValueError(
            "early_stopping_patience adds hydrabert's EarlyStoppingCallback, and callbacks has one too: use one"
        )
    judged_after = unfreezing.epochs_to_fully_unfreeze() if unfreezing is not None else 0.0
    return [
        HydraEarlyStoppingCallback(
            args.early_stopping_patience, args.early_stopping_threshold, judge_after_epoch=judged_after
        )
    ]


def describe_checkpoint_selection(args, tasks: Mapping[str, dict], unfreezing=None) -> str:
    """The log line that says which metric picks the checkpoint kept at the end, and when early stopping
    stops: `keeping the checkpoint with the best validation selection_score (mean over tasks of ...)`."""
    metric = args.metric_for_best_model
    if is_selection_metric(metric):
        metric += f" ({describe_selection_score({t: s['problem_type'] for t, s in tasks.items()})})"
    message = (
        f"keeping the checkpoint with the best validation {metric}, "
        f"{'higher' if args.greater_is_better else 'lower'} is better"
    )
    if args.early_stopping_patience is not None:
        message += f"; stopping after {args.early_stopping_patience} evaluation(s) without improvement"
        if unfreezing is not None:
            message += f", judged after epoch {unfreezing.epochs_to_fully_unfreeze()} (gradual unfreezing)"
    return message


def kept_checkpoint(args, state, task_kinds: Mapping[str, str]) -> dict | None:
    """What the model card says about the weights a run ended with: the step and epoch kept, by which metric
    and value, and whether (and where) early stopping ended the run. None when no best checkpoint was loaded."""
    if not getattr(args, "load_best_model_at_end", False) or not state.best_global_step:
        return None
    metric = args.metric_for_best_model
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    evaluations = [row for row in state.log_history if key in row]
    best_epoch = next(
        (row.get("epoch") for row in evaluations if row.get("step") == state.best_global_step), None
    )
    stopped = next((row for row in reversed(state.log_history) if "early_stopping" in row), None)
    info = {
        "step": state.best_global_step,
        "epoch": best_epoch,
        "metric": key,
        "value": state.best_metric,
        "greater_is_better": bool(args.greater_is_better),
        "evaluations": len(evaluations),
        "last_step": state.global_step,
        "last_epoch": state.epoch,
        "max_steps": state.max_steps,
        "num_train_epochs": state.num_train_epochs,
        "patience": getattr(args, "early_stopping_patience", None),
        "stopped_early": stopped is not None,
    }
    if is_selection_metric(metric):
        try:
            info["definition"] = describe_selection_score(task_kinds)
        except ValueError:
            pass
    return info


__all__ = [
    "MAIN_METRICS",
    "SELECTION_METRIC",
    "HydraEarlyStoppingCallback",
    "describe_checkpoint_selection",
    "describe_selection_score",
    "early_stopping_callbacks",
    "is_selection_metric",
    "kept_checkpoint",
    "main_metrics",
    "selection_score",
    "set_up_checkpoint_selection",
]
