"""Streaming tasks: training rows read as training needs them, never all in memory (docs/scaling.md).

A task streamed (`"streaming": true` in a run config, or a `datasets.IterableDataset` given to
`MultiTaskTrainer`) is tokenised lazily (`tokenize_stream`) and mixed with the other tasks by
`StreamingBatches`: each process reads its own share of every stream (`split_dataset_by_node`), each row's task
is drawn with the sampling strategy's probabilities, and a buffer's rows are cut into one-task batches sorted
by length (the map-style sampler's megabatches, over a window).

Why not `datasets.interleave_datasets`: it needs one schema for all its inputs, and tasks differ (class ids,
float scores, a similarity task's second-sentence columns). Its mixing rule is what this implements, per row.
A streamed run has no length, so it needs `max_steps` (checked before any data is read).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from torch.utils.data import IterableDataset as TorchIterableDataset

from .loading import Source, hub_splits, labeled_lines, load_task_splits, local_files
from .rows import LOCATION, _normalize_batch, class_names, encode_labels
from .sampling import sampling_strategy, seeded_generator
from .shared import label_tasks
from .tasks import QUOTING, LoadedTask, TaskDataConfig
from .tokenizing import _tokenize_batch, tokenizer_keys

# Rows read before a buffer is cut into batches: enough for batches of similar length, small enough to stay
# flat in memory (tokenised rows of 64 tokens: ~1 MB).
DEFAULT_BUFFER_SIZE = 2048
# Rows a task's stream shuffles among (`IterableDataset.shuffle`: a buffer, reseeded each epoch).
DEFAULT_SHUFFLE_BUFFER = 10_000


def is_stream(dataset) -> bool:
    return isinstance(dataset, datasets.IterableDataset)


def check_streaming_run(train_dataset: Mapping, args) -> None:
    """What a run with streamed tasks needs, checked before any data is read: `max_steps` (a stream has no
    length, so no epoch count can be turned into steps), no shared source, task-by-task batches."""
    streamed = [name for name, dataset in train_dataset.items() if is_stream(dataset)]
    if not streamed:
        return
    shared = [name for name, dataset in train_dataset.items() if label_tasks(dataset) is not None]
    if shared:
        raise ValueError(
            f"shared sources {shared} cannot train beside streamed tasks {streamed}: stream none"
        )
    if not args.max_steps or args.max_steps < 0:
        raise ValueError(
            f"task(s) {streamed} are streamed, which has no length: give max_steps (the number of optimizer "
            "steps to train), not num_train_epochs"
        )
    if getattr(args, "mixed_task_batches", False):
        raise ValueError(
            "mixed_task_batches is not available with streamed tasks: batches hold one task each"
        )


def stream_row_counts(streams: Mapping[str, datasets.IterableDataset]) -> dict[str, int | None]:
    """Each stream's number of rows from its own metadata (`info.splits[split].num_examples`), or None."""
    counts = {}
    for name, stream in streams.items():
        splits = stream.info.splits if stream.info is not None else None
        split = str(stream.split) if stream.split is not None else "train"
        info = splits.get(split) if splits else None
        counts[name] = int(info.num_examples) if info is not None and info.num_examples else None
    return counts


def with_row_count(stream: datasets.IterableDataset, num_rows: int, split: str = "train"):
    """`stream` with its row count recorded where `stream_row_counts` reads it (a local file's stream has none)."""
    info = stream.info.copy() if stream.info is not None else datasets.DatasetInfo()
    info.splits = datasets.SplitDict({split: datasets.SplitInfo(name=split, num_examples=int(num_rows))})
    stream._info = info
    return stream


def stream_probabilities(
    counts: Mapping[str, int | None], strategy: str, temperature: float = 1.0
) -> dict[str, float]:
    """The chance that a row comes from each task: the map-style strategies' rule on row counts (round_robin and
    uniform: equal). Proportional and temperature sampling need every count: a missing one is an error that
    names the task."""
    rule = sampling_strategy(strategy, temperature)
    unknown = [name for name, n in counts.items() if not n]
    if unknown and strategy in ("proportional", "temperature"):
        raise ValueError(
            f"task_sampling={strategy!r} weighs tasks by their rows, but the streams of {unknown} do not say how "
            "many they have: give each its num_rows in the run config (or record it with "
            "hydrabert.data.streaming.with_row_count), or use task_sampling='uniform'"
        )
    return dict(zip(counts, rule.probabilities(list(counts.values())), strict=True))


def tokenize_stream(
    stream: datasets.IterableDataset, tokenizer, max_length: int | None = None, separate_pairs: bool = False
) -> datasets.IterableDataset:
    """A task's stream (columns `text`, optional `text_pair`, `label`) tokenised lazily, row batches at a time,
    into the columns `tokenize_task` writes (`input_ids`, ..., `labels`, `length`)."""
    columns = stream.column_names
    separate = bool(separate_pairs and columns and "text_pair" in columns)
    return stream.map(
        _tokenize_batch,
        batched=True,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_length": max_length or tokenizer.model_max_length,
            "keys": tokenizer_keys(tokenizer),
            "separate_pairs": separate,
        },
        remove_columns=columns,
    )


class StreamingBatches(TorchIterableDataset):
    """Training batches of streamed tasks (module docs), collated, for one process of `world_size`.

    `streams`: `{task: tokenised datasets.IterableDataset}`; `task_names`: the model's task order (the ids the
    collator writes); `probabilities`: each task's chance per row (`stream_probabilities`); `group_by_length`
    False: a buffer's rows are batched in the order read. The rows and batches
    depend only on (seed, epoch, rank): call `set_epoch` each epoch.
    """

    def __init__(
        self,
        streams: Mapping[str, datasets.IterableDataset],
        task_names: Sequence[str],
        collate: Callable[[list[dict]], dict],
        batch_size: int,
        probabilities: Mapping[str, float],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        group_by_length: bool = True,
    ):
        unknown = [name for name in streams if name not in task_names]
        if unknown:
            raise ValueError(f"streamed task(s) {unknown} are not among the model's tasks {list(task_names)}")
        if batch_size < 1 or buffer_size < batch_size:
            raise ValueError(f"need 1 <= batch_size <= buffer_size, got {batch_size} and {buffer_size}")
        self.task_names = list(task_names)
        self.collate, self.batch_size, self.buffer_size = collate, batch_size, buffer_size
        self.probabilities = {name: float(probabilities[name]) for name in streams}
        self.seed, self.rank, self.epoch = seed, rank, 0
        self.group_by_length = group_by_length
        # Split, then shuffled: a process's share stays the same whatever pass or epoch each process is on (a
        # shuffle before the split would reassign shards whenever the epochs differ).
        self.streams = {
            name: split_dataset_by_node(stream, rank, world_size).shuffle(
                seed=seed, buffer_size=shuffle_buffer
            )
            for name, stream in streams.items()
        }

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rows(self) -> Iterator[dict]:
        """The process's rows with their `task_id`, each task drawn with its probability, until every task has
        run out once (one that runs out earlier starts over)."""
        names = list(self.streams)
        generator = seeded_generator("streaming", self.seed, self.epoch, self.rank)
        iterators = {name: self._pass(name) for name in names}
        exhausted: set[str] = set()
        weights = torch.tensor([self.probabilities[name] for name in names], dtype=torch.float64)
        while True:
            name = names[int(torch.multinomial(weights, 1, generator=generator))]
            row = next(iterators[name], None)
            if row is None:
                exhausted.add(name)
                if len(exhausted) == len(names):
                    return
                iterators[name] = self._pass(name)
                row = next(iterators[name], None)
                if row is None:
                    raise ValueError(f"the stream of task {name!r} has no rows for process {self.rank}")
            yield {**row, "task_id": self.task_names.index(name)}

    def _pass(self, name: str) -> Iterator[dict]:
        # The mix's epoch, whichever pass this is: datasets shuffles shards (seed + epoch) before it splits them
        # across processes, so a pass at another epoch would hand this process another's rows. A task that
        # runs out early repeats its order, as interleave_datasets' "all_exhausted" oversampling does.
        stream = self.streams[name]
        stream.set_epoch(self.epoch)
        return iter(stream)

    def __iter__(self) -> Iterator[dict]:
        generator = seeded_generator("streaming-batches", self.seed, self.epoch, self.rank)
        pending: dict[int, list[dict]] = {}
        for count, row in enumerate(self.rows(), start=1):
            pending.setdefault(row["task_id"], []).append(row)
            if count % self.buffer_size == 0:
                yield from self._batches(pending, generator, final=False)
        yield from self._batches(pending, generator, final=True)

    def _batches(self, pending: dict[int, list[dict]], generator, final: bool) -> Iterator[dict]:
        """Each task's buffered rows sorted by length and cut into batches (a short rest waits for the next
        buffer, unless `final`), in shuffled order."""
        batches = []
        for task_id, rows in pending.items():
            if self.group_by_length:
                rows.sort(key=lambda row: row["length"])
            cut = len(rows) if final else len(rows) - len(rows) % self.batch_size
            batches += [rows[k : k + self.batch_size] for k in range(0, cut, self.batch_size)]
            pending[task_id] = rows[cut:]
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield self.collate(batches[index])


def streaming_batches(
    train_dataset: Mapping, task_names: Sequence[str], collate, args
) -> StreamingBatches | None:
    """The `StreamingBatches` of a `MultiTaskTrainer` whose train sets include a stream (None: none does). A
    map-style task beside streamed ones streams too (`to_iterable_dataset`, its row count recorded)."""
    if not any(is_stream(dataset) for dataset in train_dataset.values()):
        return None
    check_streaming_run(train_dataset, args)
    streams = {
        name: dataset if is_stream(dataset) else with_row_count(dataset.to_iterable_dataset(), len(dataset))
        for name, dataset in train_dataset.items()
    }
    probabilities = stream_probabilities(
        stream_row_counts(streams), args.task_sampling, args.sampling_temperature
    )
    return StreamingBatches(
        streams,
        task_names,
        collate,
        args.per_device_train_batch_size,
        probabilities,
        seed=args.data_seed if args.data_seed is not None else args.seed,
        rank=args.process_index,
        world_size=args.world_size,
        buffer_size=max(args.stream_buffer_size, args.per_device_train_batch_size),
        group_by_length=args.group_by_length,
    )


class StreamingDataLoader(DataLoader):
    """A `DataLoader` over `StreamingBatches` (already batched and collated) that forwards `set_epoch`, which
    `Trainer` calls on its train dataloader each epoch."""

    def __init__(self, batches: StreamingBatches, **kwargs):
        super().__init__(batches, batch_size=None, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


# ------------------------------------------------------------------------------ reading a task as a stream
def load_streamed_task(cfg: TaskDataConfig, seed: int = 42) -> LoadedTask:
    """A task with `streaming: true`: its train split as a stream (`LoadedTask.stream`: `text`, [`text_pair`],
    `label` encoded, each row checked as training reads it, so a bad row stops the run with an error naming
    task, file and row), its validation and test splits map-style. Local files go through datasets' builders
    with `streaming=True`; a Hub dataset's splits are all streamed, its validation and test rows gathered."""
    files = local_files(cfg)
    if files is not None:
        if "train" not in files:
            raise cfg.error("streaming needs a train_file (the split that is streamed)")
        source, path, file_format = files["train"]
        stream = _file_stream(cfg, source, path, file_format)
        evaluation = dataclasses.replace(cfg, train_file=None, streaming=False)
        has_evaluation = cfg.validation_file or cfg.test_file
        splits = load_task_splits(evaluation, seed).splits if has_evaluation else datasets.DatasetDict()
    else:
        streams = hub_splits(cfg, streaming=True)
        if "train" not in streams:
            raise cfg.error(f"the Hub dataset {cfg.dataset_name!r} has no train split to stream")
        source, stream = streams.pop("train")
        splits = datasets.DatasetDict(
            {
                split: datasets.Dataset.from_list(list(_rows_of(cfg, s, raw))).remove_columns(LOCATION)
                for split, (s, raw) in streams.items()
            }
        )
    rows = _rows_of(cfg, source, stream).remove_columns(LOCATION)
    if cfg.num_rows is not None:
        rows = with_row_count(rows, cfg.num_rows)
    elif (counted := stream_row_counts({cfg.name: stream})[cfg.name]) is not None:
        rows = with_row_count(rows, counted)
    return LoadedTask(config=cfg, splits=splits, labels=cfg.labels, stream=rows)


def _file_stream(
    cfg: TaskDataConfig, source: Source, path: str, file_format: str
) -> datasets.IterableDataset:
    """A local file through datasets' builder for its format, streamed, every csv cell a string."""
    codec = "utf-8-sig" if codecs.lookup(cfg.encoding).name == "utf-8" else cfg.encoding
    if file_format == "labeled_lines":
        lines = _builder_stream("text", path, encoding=codec)
        features = {cfg.label_column: "string", cfg.text_column: "string", LOCATION: "string"}
        return lines.map(
            _labeled_batch,
            batched=True,
            with_indices=True,
            remove_columns=["text"],
            features=datasets.Features({key: datasets.Value(kind) for key, kind in features.items()}),
            fn_kwargs={"cfg": cfg, "source": source},
        )
    if file_format in ("csv", "tsv"):
        delimiter = "," if file_format == "csv" else "\t"
        if cfg.column_names is not None:
            header, options = list(cfg.column_names), {"column_names": list(cfg.column_names)}
        else:
            header, options = _csv_header(source, path, codec, cfg, delimiter), {}
        return _builder_stream(
            "csv",
            path,
            **options,
            delimiter=delimiter,
            quoting=QUOTING[cfg.quoting],
            encoding=codec,
            keep_default_na=False,
            features=datasets.Features({column: datasets.Value("string") for column in header}),
        )
    if file_format == "jsonl":
        return _builder_stream("json", path, encoding=codec)
    return _builder_stream(file_format, path)


def _labeled_batch(batch, indices, cfg: TaskDataConfig, source: Source):
    """The text builder's lines (row i: line i + 1) as `labeled_lines` reads them."""
    return labeled_lines(cfg, source, zip([index + 1 for index in indices], batch["text"], strict=True))


def _builder_stream(builder: str, path: str, **options) -> datasets.IterableDataset:
    return datasets.load_dataset(builder, data_files=path, split="train", streaming=True, **options)


def _csv_header(source: Source, path: str, codec: str, cfg: TaskDataConfig, delimiter: str) -> list[str]:
    """The header row only (the builder reads the rest as training needs it)."""
    with open(path, encoding=codec, newline="") as handle:
        records = csv.reader(handle, delimiter=delimiter, quoting=QUOTING[cfg.quoting])
        header = next((row for row in records if row), None)
    if header is None:
        raise source.error("the split is empty")
    return header


def _rows_of(cfg: TaskDataConfig, source: Source, raw: datasets.IterableDataset) -> datasets.IterableDataset:
    """`normalized_rows` and `encode_labels`, row by row: text, [text_pair], label (encoded), LOCATION."""
    names = class_names(raw.features).get(cfg.label_column) if raw.features is not None else None
    rows = raw.map(
        _normalize_batch,
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
        fn_kwargs={"cfg": cfg, "source": source, "names": names, "missing_ok": False},
    )
    columns = (
        ["text", "text_pair", "label", LOCATION] if cfg.text_pair_column else ["text", "label", LOCATION]
    )
    rows = rows.filter(lambda row: row["label"] is not None).select_columns(columns)  # label_map's nulls
    return encode_labels(cfg, source, rows, cfg.labels)


__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "StreamingBatches",
    "StreamingDataLoader",
    "check_streaming_run",
    "is_stream",
    "load_streamed_task",
    "streaming_batches",
    "stream_probabilities",
    "stream_row_counts",
    "tokenize_stream",
    "with_row_count",
]
