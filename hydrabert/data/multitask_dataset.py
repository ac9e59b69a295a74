"""All tasks' datasets behind one index, which the task samplers address."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import datasets
from torch.utils.data import Dataset as TorchDataset

from .tokenizing import token_lengths


class MultiTaskDataset(TorchDataset):
    """The tasks' datasets end to end: global index `task_offsets[task] + i` is row i of task.

    Each task keeps its own features (ClassLabel names, label dtypes), which one concatenated
    Arrow table could not. Rows come back as dicts with a `task_id` added.
    """

    def __init__(
        self, task_datasets: Mapping[str, datasets.Dataset], task_names: Sequence[str] | None = None
    ):
        if not task_datasets:
            raise ValueError("MultiTaskDataset needs at least one task")
        self.datasets = dict(task_datasets)
        # task ids index `task_names` (default: the datasets' order); pass the model's task order
        # so the ids here match the ones the model's forward expects.
        self.task_names = list(task_names) if task_names is not None else list(self.datasets)
        missing = [name for name in self.datasets if name not in self.task_names]
        if missing:
            raise ValueError(f"tasks {missing} are not in task_names {self.task_names}")
        self.task_offsets: dict[str, int] = {}
        total = 0
        for name, dataset in self.datasets.items():
            self.task_offsets[name] = total
            total += len(dataset)
        self._starts = list(self.task_offsets.values())
        self._order = list(self.task_offsets)
        self._length = total

    def __len__(self) -> int:
        return self._length

    def locate(self, index: int) -> tuple[str, int]:
        """(task name, row in that task) of a global index."""
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} examples")
        position = bisect.bisect_right(self._starts, index) - 1
        name = self._order[position]
        return name, index - self._starts[position]

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, row = self.locate(index)
        return {**self.datasets[name][row], "task_id": self.task_names.index(name)}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch (DataLoader uses it): one Arrow read per task instead of one per row."""
        by_task: dict[str, list[tuple[int, int]]] = {}
        for position, index in enumerate(indices):
            name, row = self.locate(index)
            by_task.setdefault(name, []).append((position, row))
        out: list[dict[str, Any]] = [{} for _ in indices]
        for name, items in by_task.items():
            columns = self.datasets[name][[row for _, row in items]]
            task_id = self.task_names.index(name)
            for offset, (position, _) in enumerate(items):
                out[position] = {key: values[offset] for key, values in columns.items()}
                out[position]["task_id"] = task_id
        return out

    def task_lengths(self) -> dict[str, list[int]]:
        """Token lengths per task, for `MultiTaskBatchSampler`."""
        return {name: token_lengths(dataset) for name, dataset in self.datasets.items()}


def build_multitask_dataset(
    tokenized: Mapping[str, datasets.Dataset], task_names: Sequence[str] | None = None
) -> tuple[MultiTaskDataset, dict[str, int]]:
    """One dataset over all tasks (for `DataLoader(batch_sampler=MultiTaskBatchSampler(...))`)
    and each task's offset in it. `task_names` fixes the task ids (default: `tokenized`'s order)."""
    dataset = MultiTaskDataset(tokenized, task_names=task_names)
    return dataset, dict(dataset.task_offsets)


__all__ = ["MultiTaskDataset", "build_multitask_dataset"]
