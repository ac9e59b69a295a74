"""All tasks' datasets behind one index, which the task samplers address."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from torch.utils.data import Dataset as TorchDataset

from .collation import label_key
from .shared import label_tasks
from .tokenizing import token_lengths


class MultiTaskDataset(TorchDataset):
    """The training units' datasets end to end: global index `task_offsets[unit] + i` is row i of unit.

    A unit is one task's data set (keyed by the task's name; rows come back with a `task_id` added) or a
    shared source (any key; its rows carry `labels` as a dict `{task: label or None}`, see `shared.py`).
    With a shared source among the units, every row comes back labelled by task, a one-task row as
    `{task: label}`: batches then all take the model's dict-of-labels path, whose loss is the same.

    Each unit keeps its own features (ClassLabel names, label dtypes), which one concatenated Arrow
    table could not.
    """

    def __init__(
        self, task_datasets: Mapping[str, datasets.Dataset], task_names: Sequence[str] | None = None
    ):
        if not task_datasets:
            raise ValueError("MultiTaskDataset needs at least one task")
        self.datasets = dict(task_datasets)
        # task ids index `task_names` (default: the datasets' order); pass the model's task order
        # so the ids here match the ones the model's forward expects.
        self.shared_tasks = {name: label_tasks(dataset) for name, dataset in self.datasets.items()}
        default = [task for name, tasks in self.shared_tasks.items() for task in (tasks or [name])]
        self.task_names = list(task_names) if task_names is not None else default
        self.labels_by_task = any(tasks is not None for tasks in self.shared_tasks.values())
        self._check_units()
        self.task_offsets: dict[str, int] = {}
        total = 0
        for name, dataset in self.datasets.items():
            self.task_offsets[name] = total
            total += len(dataset)
        self._starts = list(self.task_offsets.values())
        self._order = list(self.task_offsets)
        self._length = total

    def _check_units(self) -> None:
        missing = [
            name for name, tasks in self.shared_tasks.items() if tasks is None and name not in self.task_names
        ]
        if missing:
            raise ValueError(f"tasks {missing} are not in task_names {self.task_names}")
        for name, tasks in self.shared_tasks.items():
            unknown = [task for task in tasks or [] if task not in self.task_names]
            if unknown:
                raise ValueError(
                    f"shared source {name!r} labels task(s) {unknown}, which are not in task_names {self.task_names}"
                )

    def __len__(self) -> int:
        return self._length

    def locate(self, index: int) -> tuple[str, int]:
        """(unit name, row in that unit) of a global index."""
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} examples")
        position = bisect.bisect_right(self._starts, index) - 1
        name = self._order[position]
        return name, index - self._starts[position]

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, row = self.locate(index)
        return self._labelled(name, self.datasets[name][row])

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch (DataLoader uses it): one Arrow read per unit instead of one per row."""
        by_unit: dict[str, list[tuple[int, int]]] = {}
        for position, index in enumerate(indices):
            name, row = self.locate(index)
            by_unit.setdefault(name, []).append((position, row))
        out: list[dict[str, Any]] = [{} for _ in indices]
        for name, items in by_unit.items():
            columns = self.datasets[name][[row for _, row in items]]
            for offset, (position, _) in enumerate(items):
                out[position] = self._labelled(name, {key: values[offset] for key, values in columns.items()})
        return out

    def _labelled(self, unit: str, row: dict[str, Any]) -> dict[str, Any]:
        """A row as the collator takes it: a one-task row with its `task_id`, or, when labels go by task, with
        `labels` as `{task: label}`."""
        if self.shared_tasks[unit] is not None:
            return row
        if not self.labels_by_task:
            return {**row, "task_id": self.task_names.index(unit)}
        key = label_key(row)
        if key is None:
            return row
        row = dict(row)
        row["labels"] = {unit: row.pop(key)}
        return row

    def task_lengths(self) -> dict[str, list[int]]:
        """Token lengths per unit (a task, or a shared source), for `MultiTaskBatchSampler`."""
        return {name: token_lengths(dataset) for name, dataset in self.datasets.items()}


def build_multitask_dataset(
    tokenized: Mapping[str, datasets.Dataset], task_names: Sequence[str] | None = None
) -> tuple[MultiTaskDataset, dict[str, int]]:
    """One dataset over all units (for `DataLoader(batch_sampler=MultiTaskBatchSampler(...))`)
    and each unit's offset in it. `task_names` fixes the task ids (default: `tokenized`'s order)."""
    dataset = MultiTaskDataset(tokenized, task_names=task_names)
    return dataset, dict(dataset.task_offsets)


__all__ = ["MultiTaskDataset", "build_multitask_dataset"]
