"""Which batches training runs: one batch sampler per task, and a small strategy that decides which
task each batch comes from (the shape of sentence-transformers' multi-dataset samplers)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

SAMPLING_STRATEGIES = ("proportional", "round_robin", "uniform", "temperature")


def seeded_generator(*parts) -> torch.Generator:
    """A generator seeded from `parts` through SHA-256: the same on every DDP rank and in a resumed
    run (unlike hash(), which Python salts per process)."""
    digest = hashlib.sha256("/".join(map(str, ("hydrabert", *parts))).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


class TaskBatchSampler:
    """One task's batches, as indices shifted by `offset` (its place in the multi-task index).

    With `group_by_length`, transformers' `get_length_grouped_indices` orders them, as the plain
    Trainer's LengthGroupedSampler does: a random permutation cut into megabatches of up to 50
    batches, each sorted by length, so a batch holds rows of similar length and pads little.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        offset: int = 0,
        drop_last: bool = False,
        group_by_length: bool = True,
    ):
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.offset = offset
        self.drop_last = drop_last
        self.group_by_length = group_by_length

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def batches(self, generator: torch.Generator) -> list[list[int]]:
        if self.group_by_length:
            order = get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        else:
            order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size  # megabatches are whole multiples of it: only the last batch can be short
        return [[self.offset + i for i in order[k * size : (k + 1) * size]] for k in range(len(self))]


class ProportionalStrategy:
    """Every batch of every task once per epoch, in shuffled order (p_i ∝ n_i)."""

    def probabilities(self, counts: list[int]) -> list[float]:
        return [n / sum(counts) for n in counts]

    def num_batches(self, counts: list[int]) -> int:
        return sum(counts)

    def order(self, counts: list[int], generator: torch.Generator) -> list[int]:
        tasks = [task for task, n in enumerate(counts) for _ in range(n)]
        return [tasks[i] for i in torch.randperm(len(tasks), generator=generator).tolist()]


class RoundRobinStrategy:
    """Tasks in turn, t0 t1 ... t0 t1 ..., until the smallest runs out (as sentence-transformers'
    RoundRobinBatchSampler): each task gives min(n_i) batches, larger ones a fresh subset each epoch."""

    def probabilities(self, counts: list[int]) -> list[float]:
        return [1 / len(counts)] * len(counts)

    def num_batches(self, counts: list[int]) -> int:
        return len(counts) * min(counts)

    def order(self, counts: list[int], generator: torch.Generator) -> list[int]:
        return list(range(len(counts))) * min(counts)


class TemperatureStrategy:
    """Each batch's task drawn with p_i ∝ n_i ** (1 / T), for as many batches as a proportional
    epoch; a task's batches are reshuffled whenever they run out. T = 1 is proportional in
    expectation; a larger T gives small tasks more turns."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def probabilities(self, counts: list[int]) -> list[float]:
        weights = [n ** (1.0 / self.temperature) for n in counts]
        return [w / sum(weights) for w in weights]

    def num_batches(self, counts: list[int]) -> int:
        return sum(counts)

    def order(self, counts: list[int], generator: torch.Generator) -> list[int]:
        p = torch.tensor(self.probabilities(counts), dtype=torch.float64)
        return torch.multinomial(p, self.num_batches(counts), replacement=True, generator=generator).tolist()


class UniformStrategy(TemperatureStrategy):
    """Like temperature sampling, with every task equally likely (the limit T -> infinity)."""

    def probabilities(self, counts: list[int]) -> list[float]:
        return [1 / len(counts)] * len(counts)


def sampling_strategy(name: str, temperature: float = 1.0):
    """The strategy a name in SAMPLING_STRATEGIES stands for: the rule of map-style batches and of streams."""
    if name not in SAMPLING_STRATEGIES:
        raise ValueError(f"strategy must be one of {list(SAMPLING_STRATEGIES)}, got {name!r}")
    if name == "temperature":
        return TemperatureStrategy(float(temperature))
    return {
        "proportional": ProportionalStrategy,
        "round_robin": RoundRobinStrategy,
        "uniform": UniformStrategy,
    }[name]()


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Batches of global indices into the tasks' concatenated train sets (task order = the order of
    `task_lengths`; see `task_offsets`). One task per batch: each task's `TaskBatchSampler` makes its
    batches, the strategy (proportional, round_robin, uniform, temperature) picks which task goes
    next. `mixed=True`: all rows in one pool, batches mix tasks (proportional only).

    The order depends only on (seed, epoch): call `set_epoch` each epoch; every DDP rank and a
    resumed run then see the same batches.
    """

    def __init__(
        self,
        task_lengths: Mapping[str, Sequence[int]],
        batch_size: int,
        strategy: str = "proportional",
        temperature: float = 1.0,
        seed: int = 0,
        drop_last: bool = False,
        group_by_length: bool = True,
        mixed: bool = False,
    ):
        self.strategy = sampling_strategy(strategy, temperature)
        if mixed and strategy != "proportional":
            raise ValueError(f"mixed batches support strategy='proportional' only, got {strategy!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if not task_lengths:
            raise ValueError("task_lengths is empty: no tasks to sample from")
        self.task_names = list(task_lengths)
        self.lengths = {name: [int(n) for n in lengths] for name, lengths in task_lengths.items()}
        self.batch_size, self.seed, self.mixed, self.epoch = batch_size, seed, mixed, 0
        self.task_offsets: dict[str, int] = {}
        self.samplers: list[TaskBatchSampler] = []
        for name in self.task_names:
            self.task_offsets[name] = sum(len(self.lengths[n]) for n in self.task_offsets)
            sampler = TaskBatchSampler(
                self.lengths[name], batch_size, self.task_offsets[name], drop_last, group_by_length
            )
            self.samplers.append(sampler)
            if len(sampler) == 0:
                raise ValueError(
                    f"task {name!r} has {len(self.lengths[name])} examples: not one batch of "
                    f"{batch_size}{' with drop_last' if drop_last else ''}"
                )
        self.batches_per_task = {name: len(s) for name, s in zip(self.task_names, self.samplers, strict=True)}
        self.num_examples = sum(len(lengths) for lengths in self.lengths.values())
        all_lengths = [n for name in self.task_names for n in self.lengths[name]]
        self.pool = TaskBatchSampler(all_lengths, batch_size, 0, drop_last, group_by_length)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def task_probabilities(self) -> dict[str, float]:
        """The chance that a batch comes from each task, under the strategy."""
        if self.mixed:  # a batch is drawn from the pool: each task in proportion to its rows
            return {name: len(self.lengths[name]) / self.num_examples for name in self.task_names}
        probabilities = self.strategy.probabilities(list(self.batches_per_task.values()))
        return dict(zip(self.task_names, probabilities, strict=True))

    def __len__(self) -> int:
        if self.mixed:
            return len(self.pool)
        return self.strategy.num_batches(list(self.batches_per_task.values()))

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches(self.epoch)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of `epoch`, in order (what iterating yields after `set_epoch(epoch)`)."""
        if self.mixed:
            return self.pool.batches(seeded_generator(self.seed, epoch, "mixed"))
        order = self.strategy.order(
            list(self.batches_per_task.values()), seeded_generator(self.seed, epoch, "order")
        )
        streams: list[list[list[int]]] = [[] for _ in self.samplers]
        passes = [0] * len(self.samplers)
        batches = []
        for task in order:
            if not streams[task]:  # not started, or exhausted: a fresh shuffle of this task
                generator = seeded_generator(self.seed, epoch, "task", self.task_names[task], passes[task])
                streams[task] = self.samplers[task].batches(generator)[::-1]  # pop() from the end = in order
                passes[task] += 1
            batches.append(streams[task].pop())
        return batches


__all__ = [
    "SAMPLING_STRATEGIES",
    "MultiTaskBatchSampler",
    "ProportionalStrategy",
    "RoundRobinStrategy",
    "TaskBatchSampler",
    "TemperatureStrategy",
    "UniformStrategy",
    "sampling_strategy",
    "seeded_generator",
]
