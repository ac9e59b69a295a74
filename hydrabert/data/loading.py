"""Loading one task's splits: a local file opened once (parsed here in memory, or by datasets' parquet
builder), or a Hub dataset through `load_dataset(name)`; then checked and normalised by `rows.py`.

Every problem becomes a `HydraBertDataError` that names the task, the split, the file (or Hub
dataset) and, where one is at fault, the row or line.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import datasets
import pandas
import pyarrow as pa
import pyarrow.json as paj
from datasets.exceptions import DatasetGenerationError
from datasets.table import InMemoryTable
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
# What the parsers raise on a file they cannot parse (DatasetGenerationError wraps the parquet builder's).
_READ_ERRORS = (DatasetGenerationError, ValueError, KeyError, TypeError, OSError, pa.ArrowException)


@dataclass(frozen=True)
class Source:
    """Where a split comes from; turns a problem into an error message that says so."""

    task: str
    split: str
    origin: str  # "file /path/x.csv" or "Hub dataset 'sst2', split 'validation'"

    def error(self, problem: str) -> HydraBertDataError:
        return HydraBertDataError(f"Task {self.task!r}, {self.split} split ({self.origin}): {problem}")


def local_files(cfg: TaskDataConfig) -> dict[str, tuple[Source, str, str]] | None:
    """The task's files, `{split: (source, path, file format)}`, each checked to be there; None: the task reads
    its Hub dataset. The precedence (streamed tasks too): an existing data_dir, else the Hub name, else files by
    path."""
    local = cfg.data_dir is not None and os.path.isdir(cfg.data_dir)
    if not local and cfg.dataset_name:
        if cfg.data_dir is not None:
            logger.warning(
                "Task %r: data_dir %s not found; trying Hub dataset %r",
                cfg.name,
                cfg.data_dir,
                cfg.dataset_name,
            )
        return None
    if cfg.data_dir is not None and not local:
        raise cfg.error(f"data_dir {cfg.data_dir!r} does not exist and no dataset_name is given")
    files = {}
    for split in SPLITS:
        name = getattr(cfg, f"{split}_file")
        if not name:
            continue
        path = name if os.path.isabs(name) or cfg.data_dir is None else os.path.join(cfg.data_dir, name)
        streamed = " (streamed)" if cfg.streaming and split == "train" else ""
        source = Source(cfg.name, split, f"file {path}{streamed}")
        if not os.path.isfile(path):
            raise source.error("file not found" if not os.path.exists(path) else "is not a file")
        extension = os.path.splitext(path)[1].lower()
        file_format = cfg.file_format or _EXTENSION_FORMATS.get(extension) or _unknown_format(source, path)
        files[split] = (source, path, file_format)
    return files


def _raw_splits(cfg: TaskDataConfig) -> dict[str, tuple[Source, datasets.Dataset]]:
    """Each split as read, with its `Source`."""
    files = local_files(cfg)
    if files is None:
        raw = hub_splits(cfg)
    elif not files:
        raise cfg.error(f"no train_file, validation_file or test_file given for data_dir {cfg.data_dir!r}")
    else:
        raw = {}
        for split, (source, path, file_format) in files.items():
            raw[split] = (source, _read_file(cfg, source, path, file_format))
    if not raw:
        raise cfg.error("the data have no train, validation or test split")
    return raw


# ------------------------------------------------------------------------------- local files
def _read_file(cfg: TaskDataConfig, source: Source, path: str, file_format: str) -> datasets.Dataset:
    """One split's file, opened once. Parquet (binary, its Features in the file) goes to datasets' parquet
    builder. A text file is decoded here and parsed in memory by the parsers datasets' builders use (pandas for
    csv/tsv, pyarrow for JSON): their `load_dataset` opens a local file seven times (docs/task-config.md), and
    the decoded text is what the errors need anyway (the byte that does not decode, the row or line at fault)."""
    what = f"{'json' if file_format == 'jsonl' else file_format} file"
    text = None
    try:
        if file_format == "parquet":
            return datasets.load_dataset("parquet", data_files=path, split="train")
        with open(path, "rb") as handle:  # the one open of this file
            raw = handle.read()
        text = _decoded_text(source, raw, cfg.encoding)
        if not text.strip():
            raise source.error("the split is empty")
        if file_format == "labeled_lines":
            # Lines split as the text builder splits them (universal newlines): the line numbers are the editor's.
            columns = labeled_lines(cfg, source, enumerate(io.StringIO(text, newline=None), start=1))
            features = datasets.Features({name: datasets.Value("string") for name in columns})
            return datasets.Dataset.from_dict(columns, features=features)
        if file_format in ("csv", "tsv"):
            return _delimited(cfg, text, "," if file_format == "csv" else "\t")
        key = cfg.json_field.get(source.split) if isinstance(cfg.json_field, dict) else cfg.json_field
        what = "json file" if key is None else f"json file with the key json_field={key!r}"
        return _json_rows(cfg, text, key)
    except HydraBertDataError:
        raise
    except _READ_ERRORS as err:
        cause = err.__cause__ if isinstance(err, DatasetGenerationError) and err.__cause__ else err
        problem = None
        if text is not None and file_format in ("json", "jsonl"):
            problem = _json_problem(text)
        elif text is not None and file_format in ("csv", "tsv"):
            problem = _csv_problem(cfg, text, "," if file_format == "csv" else "\t")
        raise source.error(problem or f"is not a readable {what} ({type(cause).__name__}: {cause})") from None


def _unknown_format(source: Source, path: str):
    extension = os.path.splitext(path)[1].lower()
    with open(path, "rb") as handle:  # the error path only
        looks_like_json = handle.read(64).lstrip().startswith(b"{")
    hint = " (its first line looks like JSON: file_format='jsonl'?)" if looks_like_json else ""
    raise source.error(
        f"cannot infer the file format from the extension {extension or '(none)'!r}{hint}; "
        f"set file_format to one of {list(FILE_FORMATS)}"
    )


def _decoded_text(source: Source, raw: bytes, encoding: str) -> str:
    """The bytes decoded (a UTF-8 byte-order mark dropped), or an error that says which byte of which line
    failed and what to do."""
    binary = (
        f"contains NUL bytes: not a text file in encoding {encoding!r} (a binary file? UTF-16? "
        "set the task's `encoding` or `file_format` option)"
    )
    # UTF-16/32 text is full of NUL bytes; in other encodings they mean a binary file (checked
    # before decoding, so that the message says so rather than pointing at some undecodable byte).
    codec = codecs.lookup(encoding).name
    if b"\x00" in raw and not codec.startswith(("utf-16", "utf-32")):
        raise source.error(binary)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise source.error(
            f"cannot be decoded as {encoding!r} (byte 0x{raw[err.start]:02x} on line {line}); set the "
            "task's `encoding` option (e.g. 'latin-1' or 'cp1252')"
        ) from None
    if "\x00" in text:
        raise source.error(binary)
    return text[1:] if codec == "utf-8" and text.startswith("\ufeff") else text


def labeled_lines(cfg: TaskDataConfig, source: Source, lines: Iterable[tuple[int, str]]) -> dict[str, list]:
    """`label<sep>text` lines, numbered from 1, into label, text and LOCATION columns, stripped; blank lines
    skipped. Read in memory and streamed alike."""
    columns = {cfg.label_column: [], cfg.text_column: [], LOCATION: []}
    for number, line in lines:
        if not line.strip():
            continue
        label, separator, sentence = line.rstrip("\n").partition(cfg.label_separator)
        if not separator or not sentence.strip():
            raise source.error(f"line {number} has no text after the label: {line.rstrip()!r}")
        if not label.strip():
            raise source.error(f"line {number} has no label before the text: {line.rstrip()!r}")
        columns[cfg.label_column].append(label.strip())
        columns[cfg.text_column].append(sentence.strip())
        columns[LOCATION].append(f"line {number}")
    return columns


def _delimited(cfg: TaskDataConfig, text: str, delimiter: str) -> datasets.Dataset:
    """Every cell read as a string, so nothing is type-guessed ("1.0", "NA" and "007" stay as written): the
    options the csv builder gives pandas for string features."""
    frame = pandas.read_csv(
        io.StringIO(text, newline=""),
        sep=delimiter,
        quoting=QUOTING[cfg.quoting],
        names=cfg.column_names,
        dtype=object,
        keep_default_na=False,
    )
    features = datasets.Features({str(name): datasets.Value("string") for name in frame.columns})
    return datasets.Dataset.from_pandas(frame, features=features, preserve_index=False)


def _csv_problem(cfg: TaskDataConfig, text: str, delimiter: str) -> str | None:
    """The first row (0 = the first after the header, as in every other message) whose field count
    is wrong: pandas counts lines and rows its own way, and says nothing of open quotes."""
    records = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=QUOTING[cfg.quoting])
    rows = (row for row in records if row)
    try:
        width = len(cfg.column_names) if cfg.column_names is not None else len(next(rows))
        for index, row in enumerate(rows):
            if len(row) != width:
                # A quote left open swallows the rest of the file into one field (a truncated file?).
                hint = " (an unclosed quote?)" if "\n" in row[-1] else ""
                return f"row {index} has {len(row)} fields but the header has {width}{hint}: {row!r}"
    except csv.Error as err:
        return f"is not a readable csv file ({err})"
    return None


def _json_rows(cfg: TaskDataConfig, text: str, key: str | None) -> datasets.Dataset:
    """JSON lines, a JSON list of rows, or (json_field) the rows under a key, as the json builder reads
    them: through pyarrow's JSON reader, a list of strings as a `text` column, rows that are lists as
    columns "0", "1", ... (named by column_names), a field of mixed types as JSON values."""
    if key is not None or text.lstrip().startswith("["):
        rows = json.loads(text)[key] if key is not None else json.loads(text)
        names = [str(i) for i in range(max((len(r) for r in rows if isinstance(r, list)), default=0))]
        records = (
            {"text": row}
            if isinstance(row, str)
            else dict(zip(names, row, strict=False))
            if isinstance(row, list)
            else row
            for row in rows
        )
        text = "\n".join(json.dumps(record) for record in records)
    data = text.encode("utf-8")
    try:
        dataset = datasets.Dataset(
            InMemoryTable(paj.read_json(io.BytesIO(data), paj.ReadOptions(block_size=len(data) + 1)))
        )
    except pa.ArrowInvalid as err:
        if ") changed from" not in str(err):
            raise
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        columns = {name: [record.get(name) for record in records] for record in records for name in record}
        dataset = datasets.Dataset.from_dict(columns, on_mixed_types="use_json")
    if cfg.column_names and dataset.column_names == [str(i) for i in range(len(cfg.column_names))]:
        dataset = dataset.rename_columns(dict(zip(dataset.column_names, cfg.column_names, strict=True)))
    return dataset


def _json_problem(text: str) -> str | None:
    """Where a JSON document or JSON-lines file breaks (pyarrow reports a row, not a line); None when
    Python's parser accepts it."""
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


# ------------------------------------------------------------------------------------------ Hub
def hub_splits(cfg: TaskDataConfig, streaming: bool = False) -> dict[str, tuple[Source, datasets.Dataset]]:
    """`load_dataset(dataset_name)`'s splits under our names (streams, with `streaming`), after one request to
    the Hub when online: an unreachable Hub then fails at once (load_dataset would retry for ~25 s, warning
    each time). Offline, load_dataset itself answers at once, from the cache or with a ConnectionError."""
    logger.info("Task %r: loading Hub dataset %r (%s)", cfg.name, cfg.dataset_name, cfg.dataset_config_name)
    try:
        if not datasets.config.HF_HUB_OFFLINE:
            HfApi().dataset_info(cfg.dataset_name, timeout=10)
        loaded = datasets.load_dataset(cfg.dataset_name, cfg.dataset_config_name, streaming=streaming)
    except (HTTPError, OSError, ConnectionError) as err:  # HTTPError: connection failures and 404s alike
        local = f"no local folder {cfg.data_dir} (data_dir), and " if cfg.data_dir else ""
        raise cfg.error(
            f"{local}the Hub dataset {cfg.dataset_name!r} cannot be loaded ({type(err).__name__}: {err}). "
            "Point data_dir at the data (run_mtl.py resolves it under --data_root), or go online."
        ) from None
    streamed = " (streamed)" if streaming else ""
    splits = {}
    for hub_split, dataset in loaded.items():
        split = _SPLIT_ALIASES.get(hub_split)
        if split is None:
            logger.info("Task %r: ignoring Hub split %r", cfg.name, hub_split)
            continue
        origin = f"Hub dataset {cfg.dataset_name!r}, split {hub_split!r}{streamed}"
        splits[split] = (Source(cfg.name, split, origin), dataset)
    return splits


# ---------------------------------------------------------------------------------- the pipeline
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


__all__ = [
    "Source",
    "hub_splits",
    "labeled_lines",
    "load_shared_source",
    "load_task_splits",
    "load_tasks",
    "local_files",
    "source_groups",
]
