"""Collation: a batch of tokenised rows to the model's tensors, with the task of each row."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# The columns of a pair's second sentence when the two are embedded separately (a sentence-similarity task).
PAIR_PREFIX = "pair_"
# The names transformers' own collators accept for the targets (`label` from `datasets`, as run_glue).
LABEL_KEYS = ("labels", "label", "label_ids")


def _stack_labels(values: list) -> torch.Tensor:
    """Class ids -> LongTensor (B,); scores -> FloatTensor (B,); multi-hot -> FloatTensor (B, K).

    A mixed batch of class ids and scores gives floats (the model casts class ids back to long
    per task); multi-hot rows cannot share a batch with scalars or other widths.
    """
    if all(isinstance(v, (list, tuple)) for v in values):
        if len({len(v) for v in values}) != 1:
            raise ValueError("multi-label rows of different widths in one batch: use one task per batch")
        return torch.tensor(values, dtype=torch.float32)
    if any(isinstance(v, (list, tuple)) for v in values):
        raise ValueError(
            "a batch mixes multi-label rows with single-label/regression rows: use one task per batch"
        )
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return torch.tensor(values, dtype=torch.long)
    return torch.tensor(values, dtype=torch.float32)


def _stack_label_dicts(values: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Rows labelled for several tasks (`{task: label or None}`) -> `{task: tensor}`, a row without a label
    for a task (None, or the task absent from its dict) marked missing: -100 among class ids, NaN among
    floats. A task with no label in any row of the batch is left out."""
    tasks = list(dict.fromkeys(task for row in values for task in row))
    stacked = {}
    for task in tasks:
        column = [row.get(task) for row in values]
        present = [value for value in column if value is not None and not _is_missing(value)]
        if not present:
            continue
        if isinstance(present[0], (list, tuple)):
            missing = [float("nan")] * len(present[0])
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            missing = -100
        else:
            missing = float("nan")
        try:
            stacked[task] = _stack_labels([missing if value is None else value for value in column])
        except ValueError as err:
            raise ValueError(f"labels of task {task!r}: {err}") from None
    return stacked


def _is_missing(value) -> bool:
    return value == -100 if isinstance(value, int) else isinstance(value, float) and math.isnan(value)


def label_key(names) -> str | None:
    """The key a row (or a data set's column names) holds its targets under: the first of LABEL_KEYS there."""
    return next((key for key in LABEL_KEYS if key in names), None)


@dataclass
class MultiTaskCollator:
    """Pads a batch to its longest row, stacks the labels (`labels`, or `label` / `label_ids` as
    transformers' collators accept them) with the dtype their task needs, and adds `task_ids` (one
    per row) from the rows' `task_id`. Other columns (`text`, `length`, ...) are left out.

    Rows labelled for several tasks (`labels` a dict `{task: label or None}`, the rows of a shared source)
    give `labels` as a dict `{task: tensor}`, missing labels marked -100 (class ids) or NaN (floats).

    Without a tokenizer, rows that are already padded are stacked as they are (as
    `default_data_collator` would); rows of different lengths then raise, naming `processing_class`.

    Rows that hold a sentence pair to embed separately (`pair_input_ids`, ...: a sentence-similarity task)
    become two rows each, in one encoder pass: the batch's other rows as they come, then the pairs' first
    sentences, then their second sentences in the same order; a pair's label and task id go on both its rows.
    This is the layout `HydraBertModel` reads pairs from (row i of n pairs with row n + i).
    """

    tokenizer: Any = None
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        features = _pairs_as_rows(features)
        inputs = [{key: row[key] for key in MODEL_INPUTS if key in row} for row in features]
        if self.tokenizer is not None:
            batch = dict(
                self.tokenizer.pad(
                    inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
                )
            )
        else:
            check_padded([len(row["input_ids"]) for row in inputs])
            batch = {key: torch.tensor([row[key] for row in inputs]) for key in inputs[0]}
        labels = [row[key] if (key := label_key(row)) else None for row in features]
        if any(label is not None for label in labels):
            if any(label is None for label in labels):
                raise ValueError("some rows of the batch have labels and some do not")
            by_task = [isinstance(label, Mapping) for label in labels]
            if any(by_task) and not all(by_task):
                raise ValueError(
                    "a batch mixes rows labelled by task ({task: label}) with rows holding one label: give every "
                    "row its labels as a dict (MultiTaskDataset does so when one of its sources is shared)"
                )
            batch["labels"] = _stack_label_dicts(labels) if all(by_task) else _stack_labels(labels)
        if "task_id" in features[0]:
            batch["task_ids"] = torch.tensor([row["task_id"] for row in features], dtype=torch.long)
        return batch


def _pairs_as_rows(features: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Single rows first, then each pair's first sentence, then each pair's second one (same order)."""
    pair_key = PAIR_PREFIX + "input_ids"
    pairs = [row for row in features if pair_key in row]
    if not pairs:
        return features
    singles = [row for row in features if pair_key not in row]
    seconds = [
        {
            **{k: v for k, v in row.items() if not k.startswith(PAIR_PREFIX) and k not in MODEL_INPUTS},
            **{key: row[PAIR_PREFIX + key] for key in MODEL_INPUTS if PAIR_PREFIX + key in row},
        }
        for row in pairs
    ]
    return singles + pairs + seconds


def check_padded(lengths, what: str = "the batch") -> None:
    """Rows can be stacked without a tokenizer only when they are all as long."""
    if len(set(lengths)) > 1:
        raise ValueError(
            f"{what} has rows of {min(lengths)} to {max(lengths)} tokens and there is no processing_class "
            "to pad them: pass processing_class=tokenizer to MultiTaskTrainer (or pad the data, "
            "e.g. tokenizer(..., padding='max_length'))"
        )


__all__ = ["LABEL_KEYS", "MODEL_INPUTS", "MultiTaskCollator", "check_padded", "label_key"]
