"""Each task's mean training loss between two logs (`loss/<task>` in the training logs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch


class TaskLossMeans:
    """Sums each task's loss as a tensor on its device at every step (no host sync per step), and gives the means
    once per log, over all processes, starting again from zero."""

    def __init__(self):
        self.sums: dict[str, tuple[torch.Tensor, int]] = {}  # task -> (summed loss, steps) since the last log

    def add(self, task_losses: Mapping[str, torch.Tensor]) -> None:
        for task, value in task_losses.items():
            total, count = self.sums.get(task, (0.0, 0))
            self.sums[task] = (total + value.detach().float(), count + 1)

    def pop_means(
        self, tasks: Sequence[str], device, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> dict[str, float]:
        """`{"loss/<task>": mean}` for the `tasks` that had a step since the last call. `tasks` must be the same list
        on every process, and every process must call this (`reduce`, e.g. a cross-process sum, pairs them)."""
        totals = torch.stack(
            [torch.as_tensor(self.sums.get(t, (0.0, 0))[0], device=device).float() for t in tasks]
        )
        counts = torch.tensor([self.sums.get(t, (0.0, 0))[1] for t in tasks], device=device)
        self.sums = {}
        if reduce is not None:
            totals, counts = reduce(totals), reduce(counts)
        return {
            f"loss/{task}": round(total / count, 4)
            for task, total, count in zip(tasks, totals.tolist(), counts.tolist(), strict=True)
            if count
        }


__all__ = ["TaskLossMeans"]
