"""Task data for hydrabert: specs, loading, tokenising, task sampling and collation.

The pipeline, one task at a time, then all tasks together:

    cfg = TaskDataConfig.from_dict({"name": "trec", "data_dir": "../shared/data/trec", ...})
    task = load_task_splits(cfg, seed=42)                   # DatasetDict: text, [text_pair], label
    tokenized = tokenize_task(task.splits, tokenizer, 128)   # input_ids, ..., labels, length
    train, offsets = build_multitask_dataset({"trec": tokenized["train"], ...})
    sampler = MultiTaskBatchSampler(train.task_lengths(), batch_size=32, strategy="temperature")
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=MultiTaskCollator(tokenizer))

Modules: `tasks` (TaskDataConfig, LoadedTask), `loading` (each file opened once and parsed in memory,
Hub datasets, the error wrapper), `rows` (text and label checks, label encoding), `tokenizing`, `multitask_dataset`,
`sampling` (per-task batch samplers and the strategies that interleave them), `collation`, `shared`
(sources whose rows are labelled for several tasks: one unit in training, per-task rows in evaluation).

Every problem with the data (missing file or column, undecodable bytes, a label outside the
label set, an empty split...) raises `HydraBertDataError` while loading, before any training
starts, with a message that names the task, the split, the file and the row or line.
"""

from .collation import MultiTaskCollator, check_padded
from .loading import load_shared_source, load_task_splits, load_tasks, source_groups
from .multitask_dataset import MultiTaskDataset, build_multitask_dataset
from .sampling import SAMPLING_STRATEGIES, MultiTaskBatchSampler, TaskBatchSampler
from .shared import label_counts, label_tasks, per_task_datasets, task_rows
from .tasks import (
    FILE_FORMATS,
    PROBLEM_TYPES,
    SOURCE_FIELDS,
    HydraBertDataError,
    LoadedTask,
    SharedSource,
    TaskDataConfig,
)
from .tokenizing import token_lengths, tokenize_task

__all__ = [
    "FILE_FORMATS",
    "PROBLEM_TYPES",
    "SOURCE_FIELDS",
    "SAMPLING_STRATEGIES",
    "HydraBertDataError",
    "LoadedTask",
    "MultiTaskBatchSampler",
    "MultiTaskCollator",
    "MultiTaskDataset",
    "SharedSource",
    "TaskBatchSampler",
    "TaskDataConfig",
    "build_multitask_dataset",
    "check_padded",
    "label_counts",
    "label_tasks",
    "load_task_splits",
    "load_shared_source",
    "load_tasks",
    "per_task_datasets",
    "source_groups",
    "task_rows",
    "token_lengths",
    "tokenize_task",
]
