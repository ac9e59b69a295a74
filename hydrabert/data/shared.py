"""Shared sources: one data set whose rows are labelled for several tasks.

A shared source's rows carry their labels as one struct column, `label` (as loaded) or `labels` (as
tokenised), `{task: label or None}`: None where the row has no label for that task. Training reads such a
data set as one unit, one encoder pass per row for every task it labels; evaluation reads each task's
labelled rows as an ordinary per-task data set (`task_rows`).
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets
import numpy as np
import pyarrow.compute as pc

from .collation import label_key


def label_column(dataset) -> str | None:
    """The name of the label column (`labels`, `label` or `label_ids`, as the collator reads them)."""
    if isinstance(dataset, datasets.Dataset):
        names = dataset.column_names
    else:  # a torch or list data set: its first row says
        names = list(dataset[0]) if len(dataset) else []
    return label_key(names)


def label_tasks(dataset) -> list[str] | None:
    """The tasks a shared source labels (the keys of its label struct); None for a one-task data set, and for a
    stream (shared sources are not streamed: its rows are not read to find out)."""
    if isinstance(dataset, datasets.IterableDataset):
        return None
    column = label_column(dataset)
    if column is None:
        return None
    if isinstance(dataset, datasets.Dataset):
        feature = dataset.features[column]
        return list(feature) if isinstance(feature, dict) else None
    first = dataset[0][column]
    return list(first) if isinstance(first, Mapping) else None


def task_rows(dataset: datasets.Dataset, task: str) -> datasets.Dataset:
    """The rows of a shared source that carry `task`'s label, with that label (and its feature: ClassLabel
    names and all) as the label column: an ordinary one-task data set, for evaluation and metrics."""
    column = label_column(dataset)
    tasks = label_tasks(dataset)
    if tasks is None:
        raise ValueError(f"the data set has no label struct by task (columns {dataset.column_names})")
    if task not in tasks:
        raise ValueError(f"task {task!r} is not labelled in this shared source; its tasks: {tasks}")
    labels = dataset.with_format("arrow")[column].combine_chunks().field(task)
    keep = np.flatnonzero(pc.is_valid(labels).to_numpy(zero_copy_only=False))
    out = dataset.select(keep) if len(keep) < len(dataset) else dataset
    features = out.features.copy()
    features[column] = dataset.features[column][task]
    return out.map(
        lambda batch: {column: [row[task] for row in batch[column]]},
        batched=True,
        features=features,
        desc=f"Rows labelled for {task}",
    )


def per_task_datasets(task_datasets: Mapping[str, datasets.Dataset]) -> dict[str, datasets.Dataset]:
    """`{unit: data set}` with each shared source replaced by its tasks' labelled rows (`task_rows`): what
    per-task evaluation reads. A task given twice (as a unit and in a shared source) is an error."""
    out: dict[str, datasets.Dataset] = {}
    for name, dataset in task_datasets.items():
        tasks = label_tasks(dataset)
        parts = {name: dataset} if tasks is None else {task: task_rows(dataset, task) for task in tasks}
        for task, rows in parts.items():
            if task in out:
                raise ValueError(f"task {task!r} has two evaluation data sets (one from {name!r})")
            out[task] = rows
    return out


def label_counts(dataset) -> dict[str, int]:
    """Per task, the rows of a shared source that carry its label."""
    column = label_column(dataset)
    labels = dataset.with_format("arrow")[column].combine_chunks()
    return {task: len(labels) - labels.field(task).null_count for task in label_tasks(dataset)}


__all__ = ["label_column", "label_counts", "label_tasks", "per_task_datasets", "task_rows"]
