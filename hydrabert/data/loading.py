"""Loading one task's splits: local files through `datasets`' own builders (csv, json, parquet,
text), or a Hub dataset through `load_dataset(name)`; then checked and normalised by `rows.py`.

Every problem becomes a `HydraBertDataError` that names the task, the split, the file (or Hub
dataset) and, where one is at fault, the row or line.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import itertools
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import datasets
import pyarrow as pa
from datasets.exceptions import DatasetGenerationError
from huggingface_hub import HfApi
from huggingface_hub.errors import HTTPError

from .rows import LOCATION, class_names, encode_labels, normalized_rows, resolve_labels
from .shared import task_rows
from .tasks import (
    FILE_FORMATS,
    QUOTING,
    SOURCE_FIELDS,
    SPLITS,
    HydraBertDataError,
    LoadedTask,
    SharedSource,
    TaskDataConfig,
)

logger = logging.getLogger(__name__)

_EXTENSION_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
# Hub datasets name their splits freely; these are the names we map onto ours.
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation"}
_SPLIT_ALIASES.update(dev="validation", test="test")
# What the builders raise on a file they cannot parse (DatasetGenerationError wraps the parser's own).
_READ_ERRORS = (DatasetGenerationError, ValueError, KeyError, OSError, pa.ArrowException, StopIteration)


@dataclass(frozen=True)
class Source:
    """Where a split comes from; turns a problem into an error message that says so."""

    task: str
    split: str
    origin: str  # "file /path/x.csv" or "Hub dataset 'sst2', split 'validation'"

    def error(self, problem: str) -> HydraBertDataError:
        return HydraBertDataError(f"Task {self.task!r}, {self.split} split ({self.origin}): {problem}")

    def read(self, what: str, load: Callable[..., datasets.Dataset], *args, diagnose=None, **kwargs):
        """The one wrapper around the builders: a parser's failure becomes an error that names the
        task, the split and the file, and the row or line: the parser's message names it, or
        `diagnose()` (which returns the problem, or None) finds it when that message does not."""
        try:
            return load(*args, **kwargs)
        except HydraBertDataError:
            raise
        except _READ_ERRORS as err:
            cause = err.__cause__ if isinstance(err, DatasetGenerationError) and err.__cause__ else err
            problem = diagnose() if diagnose is not None else None
            raise self.error(
                problem or f"is not a readable {what} ({type(cause).__name__}: {cause})"
            ) from None


def _builder(name: str, path: str, **options) -> datasets.Dataset:
    return datasets.load_dataset(name, data_files=path, split="train", **options)


# ------------------------------------------------------------------------------- local files
def _uses_local_files(cfg: TaskDataConfig) -> bool:
    """The precedence rule: an existing data_dir, else the Hub name, else files by path."""
    if cfg.data_dir is not None and os.path.isdir(cfg.data_dir):
        return True
    if cfg.dataset_name:
        if cfg.data_dir is not None:
            logger.warning(
                "Task %r: data_dir %s not found; trying Hub dataset %r",
                cfg.name,
                cfg.data_dir,
                cfg.dataset_name,
            )
        return False
    if cfg.data_dir is not None:
        raise cfg.error(f"data_dir {cfg.data_dir!r} does not exist and no dataset_name is given")
    return True


def _local_splits(cfg: TaskDataConfig) -> dict[str, tuple[Source, datasets.Dataset]]:
    files = {split: getattr(cfg, f"{split}_file") for split in SPLITS if getattr(cfg, f"{split}_file")}
    if not files:
        raise cfg.error(f"no train_file, validation_file or test_file given for data_dir {cfg.data_dir!r}")
    splits = {}
    for split, name in files.items():
        path = name if os.path.isabs(name) or cfg.data_dir is None else os.path.join(cfg.data_dir, name)
        source = Source(cfg.name, split, f"file {path}")
        splits[split] = (source, _read_file(cfg, source, path, split))
    return splits


def _read_file(cfg: TaskDataConfig, source: Source, path: str, split: str) -> datasets.Dataset:
    if not os.path.isfile(path):
        raise source.error("file not found" if not os.path.exists(path) else "is not a file")
    file_format = cfg.file_format or _infer_format(source, path)
    if file_format == "parquet":  # datasets keeps its Features (ClassLabel names) in the file
        return source.read("parquet file", _builder, "parquet", path)
    text = _decoded_text(source, path, cfg.encoding)
    if not text.strip():  # before the builders, which fail on empty files in their own ways
        raise source.error("the split is empty")
    # utf-8-sig reads plain UTF-8 identically and drops a byte-order mark if there is one.
    codec = "utf-8-sig" if codecs.lookup(cfg.encoding).name == "utf-8" else cfg.encoding
    if file_format == "labeled_lines":
        lines = source.read("text file", _builder, "text", path, encoding=codec)
        return _split_labeled_lines(cfg, source, lines)
    if file_format in ("csv", "tsv"):
        return _read_delimited(cfg, source, path, text, codec, "," if file_format == "csv" else "\t")
    key = cfg.json_field.get(split) if isinstance(cfg.json_field, dict) else cfg.json_field
    what = "json file" if key is None else f"json file with the key json_field={key!r}"
    options = {"field": key} if key else {}
    dataset = source.read(
        what, _builder, "json", path, encoding=codec, diagnose=lambda: _json_problem(text), **options
    )
    if cfg.column_names and dataset.column_names == [str(i) for i in range(len(cfg.column_names))]:
        dataset = dataset.rename_columns(dict(zip(dataset.column_names, cfg.column_names, strict=True)))
    return dataset


def _infer_format(source: Source, path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension in _EXTENSION_FORMATS:
        return _EXTENSION_FORMATS[extension]
    with open(path, "rb") as handle:
        looks_like_json = handle.read(64).lstrip().startswith(b"{")
    hint = " (its first line looks like JSON: file_format='jsonl'?)" if looks_like_json else ""
    raise source.error(
        f"cannot infer the file format from the extension {extension or '(none)'!r}{hint}; "
        f"set file_format to one of {list(FILE_FORMATS)}"
    )


def _decoded_text(source: Source, path: str, encoding: str) -> str:
    """The file decoded, or an error that says which byte of which line failed and what to do: the
    builders' own decoding errors name neither."""
    with open(path, "rb") as handle:
        raw = handle.read()
    binary = source.error(
        f"contains NUL bytes: not a text file in encoding {encoding!r} (a binary file? UTF-16? "
        "set the task's `encoding` or `file_format` option)"
    )
    # UTF-16/32 text is full of NUL bytes; in other encodings they mean a binary file (checked
    # before decoding, so that the message says so rather than pointing at some undecodable byte).
    if b"\x00" in raw and not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        raise binary
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise source.error(
            f"cannot be decoded as {encoding!r} (byte 0x{raw[err.start]:02x} on line {line}); set the "
            "task's `encoding` option (e.g. 'latin-1' or 'cp1252')"
        ) from None
    if "\x00" in text:
        raise binary
    return text


def _json_problem(text: str) -> str | None:
    """Where a JSON document or JSON-lines file breaks (the json builder reports a byte position or
    an Arrow block row); None when Python's parser accepts it."""
    try:
        json.loads(text)
        return None
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":  # "Extra data": a second value follows, so this is JSON lines
            return f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        try:
            json.loads(line) if line.strip() else None
        except json.JSONDecodeError as err:
            return f"line {number} is not valid JSON ({err.msg})"
    return None


def _read_delimited(
    cfg, source: Source, path: str, text: str, codec: str, delimiter: str
) -> datasets.Dataset:
    """Every cell read as a string, so nothing is type-guessed ("1.0", "NA" and "007" stay as written)."""
    options = {}
    if cfg.column_names is not None:
        header = options["column_names"] = list(cfg.column_names)
    else:  # the first two records: the header, and whether any row follows it
        records = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=QUOTING[cfg.quoting])
        header, *first_row = itertools.islice((row for row in records if row), 2)
        if not first_row:
            raise source.error("the split is empty")
    features = datasets.Features({name: datasets.Value("string") for name in header})
    what = "csv file" if delimiter == "," else "tsv file"
    return source.read(
        what,
        _builder,
        "csv",
        path,
        diagnose=lambda: _csv_problem(
            text, delimiter, len(header), skip_header=cfg.column_names is None, quoting=QUOTING[cfg.quoting]
        ),
        delimiter=delimiter,
        quoting=QUOTING[cfg.quoting],
        encoding=codec,
        features=features,
        keep_default_na=False,
        **options,
    )


def _csv_problem(text: str, delimiter: str, width: int, skip_header: bool, quoting: int = 0) -> str | None:
    """The first row (0 = the first after the header, as in every other message) whose field count
    is wrong: pandas counts lines and rows its own way, and says nothing of open quotes."""
    records = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    rows = (row for row in records if row)
    try:
        for index, row in enumerate(itertools.islice(rows, 1 if skip_header else 0, None)):
            if len(row) != width:
                # A quote left open swallows the rest of the file into one field (a truncated file?).
                hint = " (an unclosed quote?)" if "\n" in row[-1] else ""
                return f"row {index} has {len(row)} fields but the header has {width}{hint}: {row!r}"
    except csv.Error as err:
        return f"is not a readable csv file ({err})"
    return None


def _split_labeled_lines(cfg: TaskDataConfig, source: Source, lines: datasets.Dataset) -> datasets.Dataset:
    """`label<sep>text` lines into two columns. The text builder gives one row per line, blank
    lines included, so row i is line i + 1; blank lines are dropped here, text is stripped."""
    features = {cfg.label_column: "string", cfg.text_column: "string", LOCATION: "string"}
    return lines.map(
        _split_label,
        batched=True,
        with_indices=True,
        remove_columns=lines.column_names,
        features=datasets.Features({name: datasets.Value(kind) for name, kind in features.items()}),
        fn_kwargs={"cfg": cfg, "source": source},
        desc="Splitting labels",
    )


def _split_label(batch, indices: Sequence[int], cfg: TaskDataConfig, source: Source):
    out = {cfg.label_column: [], cfg.text_column: [], LOCATION: []}
    for index, line in zip(indices, batch["text"], strict=True):
        if not line.strip():
            continue
        label, separator, sentence = line.partition(cfg.label_separator)
        if not separator or not sentence.strip():
            raise source.error(f"line {index + 1} has no text after the label: {line.rstrip()!r}")
        if not label.strip():
            raise source.error(f"line {index + 1} has no label before the text: {line.rstrip()!r}")
        out[cfg.label_column].append(label.strip())
        out[cfg.text_column].append(sentence.strip())
        out[LOCATION].append(f"line {index + 1}")
    return out


# ------------------------------------------------------------------------------------------ Hub
def _hub_splits(cfg: TaskDataConfig) -> dict[str, tuple[Source, datasets.Dataset]]:
    splits = {}
    for hub_split, dataset in _load_hub_dataset(cfg).items():
        split = _SPLIT_ALIASES.get(hub_split)
        if split is None:
            logger.info("Task %r: ignoring Hub split %r", cfg.name, hub_split)
            continue
        splits[split] = (
            Source(cfg.name, split, f"Hub dataset {cfg.dataset_name!r}, split {hub_split!r}"),
            dataset,
        )
    return splits


def _load_hub_dataset(cfg: TaskDataConfig) -> datasets.DatasetDict:
    """`load_dataset(dataset_name)`, after one request to the Hub when online: an unreachable Hub then
    fails at once (load_dataset would retry for ~25 s, warning each time). Offline, load_dataset
    itself answers at once, from the cache or with a ConnectionError."""

    def unreachable(err: Exception) -> HydraBertDataError:
        local = f"no local folder {cfg.data_dir} (data_dir), and " if cfg.data_dir else ""
        return cfg.error(
            f"{local}the Hub dataset {cfg.dataset_name!r} cannot be loaded ({type(err).__name__}: {err}). "
            "Point data_dir at the data (run_mtl.py resolves it under --data_root), or go online."
        )

    logger.info("Task %r: loading Hub dataset %r (%s)", cfg.name, cfg.dataset_name, cfg.dataset_config_name)
    if not datasets.config.HF_HUB_OFFLINE:
        try:
            HfApi().dataset_info(cfg.dataset_name, timeout=10)
        except (HTTPError, OSError) as err:  # HTTPError: connection failures and 404s alike
            raise unreachable(err) from None
    try:
        return datasets.load_dataset(cfg.dataset_name, cfg.dataset_config_name)
    except (ConnectionError, FileNotFoundError) as err:
        raise unreachable(err) from None


# ---------------------------------------------------------------------------------- the pipeline
def _raw_splits(cfg: TaskDataConfig) -> dict[str, tuple[Source, datasets.Dataset]]:
    raw = _local_splits(cfg) if _uses_local_files(cfg) else _hub_splits(cfg)
    if not raw:
        raise cfg.error("the data have no train, validation or test split")
    return raw


def load_task_splits(cfg: TaskDataConfig, seed: int = 42) -> LoadedTask:
    """Load, validate and normalise one task's splits.

    Columns: `text` (str), `text_pair` (when `text_pair_column` is set) and `label`: a
    `ClassLabel` id (single-label), a float (regression) or a multi-hot float list
    (multi-label). Rows that `label_map` leaves without a label are dropped. Raises
    `HydraBertDataError` on any problem with the data.
    """
    if cfg.source is not None:
        raise cfg.error(f"reads its rows from task {cfg.source!r}: load them together with load_tasks([...])")
    raw = _raw_splits(cfg)
    rows = {
        split: _labelled_only(source, normalized_rows(cfg, source, dataset))
        for split, (source, dataset) in raw.items()
    }
    names = [class_names(dataset.features).get(cfg.label_column) for _, dataset in raw.values()]
    labels = resolve_labels(cfg, list(rows.values()), names, split_names=list(rows))
    splits = datasets.DatasetDict()
    for split in SPLITS:
        if split in rows:
            splits[split] = encode_labels(cfg, raw[split][0], rows[split], labels).remove_columns(LOCATION)
    _carve_validation(cfg, splits, seed)
    return LoadedTask(config=cfg, splits=splits, labels=labels)


def _labelled_only(source: Source, rows: datasets.Dataset) -> datasets.Dataset:
    """The rows that have a label (label_map can map a value to null: no label)."""
    keep = _labelled_positions(rows)
    if not keep:
        raise source.error("no row has a label: label_map maps every value in this split to null")
    return rows if len(keep) == len(rows) else rows.select(keep)


def _labelled_positions(rows: datasets.Dataset) -> list[int]:
    return [i for i, label in enumerate(rows["label"]) if label is not None]


def _carve_validation(cfg: TaskDataConfig, splits: datasets.DatasetDict, seed: int):
    """A seeded validation split cut from train, only when the data bring none."""
    pct = cfg.validation_split_percentage
    if pct is None or "validation" in splits or "train" not in splits:
        return
    size = len(splits["train"])
    n_validation = max(1, round(size * pct / 100))
    if n_validation >= size:
        raise cfg.error(f"train has {size} rows: too few to carve a {pct}% validation split")
    parts = splits["train"].train_test_split(test_size=n_validation, shuffle=True, seed=seed)
    splits["train"], splits["validation"] = parts["train"], parts["test"]
    logger.info(
        "Task %r: no validation split; carved %s%% of train (%d rows, seed %d), %d rows left to train on",
        cfg.name,
        f"{pct:g}",
        n_validation,
        seed,
        size - n_validation,
    )
    if "test" in splits:  # keep the train, validation, test order
        splits["test"] = splits.pop("test")


def load_tasks(configs: Sequence[TaskDataConfig], seed: int = 42) -> dict[str, LoadedTask]:
    """Load several tasks, keyed by name (names must be unique), in the order given. The tasks of a shared
    source (a task and those naming it as their `source`) are read together, once (`load_shared_source`); a
    task with `streaming: true` gets its train split as a stream (`streaming.load_streamed_task`)."""
    from .streaming import load_streamed_task  # streaming.py builds on this module's readers

    loaded: dict[str, LoadedTask] = {}
    for group in source_groups(configs).values():
        if len(group) == 1 and group[0].streaming:
            loaded[group[0].name] = load_streamed_task(group[0], seed=seed)
        elif len(group) == 1:
            loaded[group[0].name] = load_task_splits(group[0], seed=seed)
        else:
            loaded.update(load_shared_source(group, seed=seed))
    return {cfg.name: loaded[cfg.name] for cfg in configs}


def source_groups(configs: Sequence[TaskDataConfig]) -> dict[str, list[TaskDataConfig]]:
    """`{source task: [it, then the tasks that read its rows]}`, a task without readers alone. A reader comes
    back with the source's data fields (SOURCE_FIELDS) in place of its `source`: the config it is read by."""
    by_name: dict[str, TaskDataConfig] = {}
    for cfg in configs:
        if cfg.name in by_name:
            raise cfg.error("two tasks have this name")
        by_name[cfg.name] = cfg
    groups = {cfg.name: [cfg] for cfg in configs if cfg.source is None}
    for cfg in configs:
        if cfg.source is None:
            continue
        root = by_name.get(cfg.source)
        if root is None:
            raise cfg.error(f"source {cfg.source!r} is not a task of this run; the tasks: {list(by_name)}")
        if root.source is not None:
            raise cfg.error(
                f"source {cfg.source!r} reads its own rows from {root.source!r}: name {root.source!r} as the source"
            )
        data = {name: getattr(root, name) for name in SOURCE_FIELDS}
        groups[root.name].append(dataclasses.replace(cfg, source=None, **data))
    return groups


def load_shared_source(configs: Sequence[TaskDataConfig], seed: int = 42) -> dict[str, LoadedTask]:
    """The tasks of one shared source (`configs`: the source task first, the readers with its data fields, as
    `source_groups` gives them): its files or Hub dataset read once, each task's labels checked and encoded as
    its own would be. Each `LoadedTask` holds the rows that carry its label; all hold the same `SharedSource`,
    whose rows carry every task's label. A row may lack a task's label (an empty cell, or the task's label
    column absent from the split); one lacking all of them is left out."""
    root = configs[0]
    raw = _raw_splits(root)
    for cfg in configs:
        if not any(cfg.label_column in dataset.column_names for _, dataset in raw.values()):
            columns = next(iter(raw.values()))[1].column_names
            raise cfg.error(
                f"column {cfg.label_column!r} (label_column) is in no split of the source (task {root.name!r}'s "
                f"data); available columns: {columns}"
            )
    rows = {
        split: {
            cfg.name: normalized_rows(
                cfg, dataclasses.replace(source, task=cfg.name), dataset, missing_ok=True
            )
            for cfg in configs
        }
        for split, (source, dataset) in raw.items()
    }
    encoded = {cfg.name: _encoded_labels(cfg, raw, rows) for cfg in configs}
    shared = datasets.DatasetDict()
    for split in SPLITS:
        if split in rows:
            base = rows[split][root.name].remove_columns(["label", LOCATION])
            shared[split] = _with_label_struct(
                base, {task: values[split] for task, values in encoded.items()}
            )
    _carve_validation(root, shared, seed)
    source = SharedSource(tasks=[cfg.name for cfg in configs], splits=shared)
    return {cfg.name: _task_of_source(cfg, source, encoded[cfg.name]["labels"]) for cfg in configs}


def _encoded_labels(cfg: TaskDataConfig, raw: dict, rows: dict) -> dict:
    """One task's labels in a shared source, per split: `(feature, values)` with None for a row without one
    (and under "labels", the label names)."""
    labelled = {split: parts[cfg.name] for split, parts in rows.items()}
    positions = {split: _labelled_positions(dataset) for split, dataset in labelled.items()}
    names = [class_names(dataset.features).get(cfg.label_column) for _, dataset in raw.values()]
    labelled_rows = [labelled[s].select(positions[s]) for s in labelled]
    labels = resolve_labels(cfg, labelled_rows, names, split_names=list(labelled))
    out: dict = {"labels": labels}
    for split, dataset in labelled.items():
        source = dataclasses.replace(raw[split][0], task=cfg.name)
        encoded = encode_labels(cfg, source, dataset.select(positions[split]), labels)
        values = [None] * len(dataset)
        for position, value in zip(positions[split], encoded["label"], strict=True):
            values[position] = value
        out[split] = (encoded.features["label"], values)
    return out


def _with_label_struct(base: datasets.Dataset, per_task: dict[str, tuple]) -> datasets.Dataset:
    """`base` (text columns) plus `label`: per row `{task: value or None}`; rows without any label left out."""
    feature = {task: feature for task, (feature, _) in per_task.items()}
    columns = {task: values for task, (_, values) in per_task.items()}
    structs = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    dataset = base.add_column("label", structs, feature=feature)
    keep = [i for i, row in enumerate(structs) if any(value is not None for value in row.values())]
    return dataset if len(keep) == len(dataset) else dataset.select(keep)


def _task_of_source(cfg: TaskDataConfig, source: SharedSource, labels) -> LoadedTask:
    splits = datasets.DatasetDict(
        {split: task_rows(dataset, cfg.name) for split, dataset in source.splits.items()}
    )
    splits = datasets.DatasetDict({split: dataset for split, dataset in splits.items() if len(dataset)})
    if not splits:
        raise cfg.error(
            f"no row of the shared source (task {source.tasks[0]!r}'s data) has a label for this task"
        )
    return LoadedTask(config=cfg, splits=splits, labels=labels, shared=source)


__all__ = ["Source", "load_shared_source", "load_task_splits", "load_tasks", "source_groups"]
