"""Task data for hydrabert: specs, loading, tokenising, task sampling and collation.

The pipeline, one task at a time, then all tasks together:

    cfg = TaskDataConfig.from_dict({"name": "trec", "data_dir": "../shared/data/trec", ...})
    task = load_task_splits(cfg, seed=42)                   # DatasetDict: text, [text_pair], label
    tokenized = tokenize_task(task.splits, tokenizer, 128)   # input_ids, ..., labels, length
    train, offsets = build_multitask_dataset({"trec": tokenized["train"], ...})
    sampler = MultiTaskBatchSampler(train.task_lengths(), batch_size=32, strategy="temperature")
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=MultiTaskCollator(tokenizer))

Every problem with the data (missing file or column, undecodable bytes, a label outside the
label set, an empty split...) raises `HydraBertDataError` while loading, before any training
starts, with a message that names the task, the file and the row.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import dataclasses
import difflib
import io
import json
import logging
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from datasets.fingerprint import Hasher
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
FILE_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "labeled_lines")
LABEL_TRANSFORMS = ("coarse",)
SAMPLING_STRATEGIES = ("proportional", "round_robin", "uniform", "temperature")
SPLITS = ("train", "validation", "test")

_EXTENSION_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
# Hub datasets name their splits freely; these are the names we map onto ours.
_SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
# A multi-label value given as one string ("sports,politics") is split on this.
MULTI_LABEL_SEPARATOR = ","
# Bump when the tokenised columns change, so stale caches are not reused.
_TOKENIZE_CACHE_VERSION = "hydrabert-tokenize-1"


class HydraBertDataError(ValueError):
    """A task's data cannot be used; the message names the task, the file and the problem."""


# ---------------------------------------------------------------------------------------------
# Task specification
# ---------------------------------------------------------------------------------------------


@dataclass
class TaskDataConfig:
    """Where one task's data comes from and how to read it.

    A local `data_dir` that exists wins over `dataset_name`, so one config runs offline against
    ../shared/data and online (from the Hub) for users who do not have that directory.
    """

    name: str
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    data_dir: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    # None: inferred from the extension (.csv .tsv .json .jsonl .parquet).
    file_format: str | None = None
    # The `label text` line format of the SST/MR/TREC files.
    label_separator: str = " "
    # "coarse": keep the part of a label before ':' (TREC `DESC:manner` -> `DESC`).
    label_transform: str | None = None
    encoding: str = "utf-8"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # Names of headerless csv/tsv columns, or of the items of JSON rows that are lists.
    column_names: list[str] | None = None
    # Key of the JSON object that holds the rows: one key, or one per split ({"validation": "val"}).
    json_field: str | dict[str, str] | None = None
    # None: ClassLabel names when the data have them, else the sorted unique values.
    labels: list[str] | None = None
    # The data hold 0-based ids into `labels` (TREC.*.all: 0 = DESC, 1 = ENTY, ...), as ClassLabel.
    label_ids: bool = False
    problem_type: str = "single_label_classification"
    weight: float = 1.0
    # Carve this percentage of train into a seeded validation split when there is none.
    validation_split_percentage: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise HydraBertDataError(f"TaskDataConfig.name must be a non-empty string, got {self.name!r}")
        if not self.name.isidentifier():
            # Checked here, before any data is read: the name becomes a head (heads.<name>) and metric prefix.
            raise self._error(
                "name must be a valid Python identifier (letters, digits, _): it names the model's head"
            )
        self._check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        self._check_choice("file_format", self.file_format, FILE_FORMATS, optional=True)
        self._check_choice("label_transform", self.label_transform, LABEL_TRANSFORMS, optional=True)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise self._error(f"encoding {self.encoding!r} is not a known codec") from None
        if not self.label_separator:
            raise self._error("label_separator must not be empty")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight < 0:
            raise self._error(f"weight must be a finite number >= 0, got {self.weight!r}")
        pct = self.validation_split_percentage
        if pct is not None and not 0 < pct < 100:
            raise self._error(f"validation_split_percentage must be in (0, 100), got {pct!r}")
        self.labels = self._checked_labels()
        if self.label_ids and self.labels is None:
            raise self._error("label_ids=True needs the label names in labels")
        if not (
            self.dataset_name or self.data_dir or self.train_file or self.validation_file or self.test_file
        ):
            raise self._error("give a dataset_name (Hub), a data_dir, or data files")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskDataConfig:
        """Build from a JSON-like dict; an unknown key is an error that names it."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in valid]
        if unknown:
            hints = [
                f"{key!r} (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(key, valid, 1))
                else repr(key)
                for key in unknown
            ]
            raise HydraBertDataError(
                f"Task {data.get('name', '?')!r}: unknown key(s) {', '.join(hints)}; valid keys: {', '.join(valid)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _error(self, problem: str) -> HydraBertDataError:
        return HydraBertDataError(f"Task {self.name!r}: {problem}")

    def _check_choice(self, field_name: str, value, choices, optional: bool = False):
        if value is None and optional:
            return
        if value not in choices:
            raise self._error(f"{field_name} must be one of {list(choices)}, got {value!r}")

    def _checked_labels(self) -> list[str] | None:
        if self.labels is None:
            return None
        if self.problem_type == "regression":
            raise self._error("labels are for classification tasks; a regression task has none")
        names = [_label_str(label) for label in self.labels]
        if not names or len(set(names)) != len(names):
            raise self._error(f"labels must be a non-empty list of distinct names, got {self.labels!r}")
        return names


@dataclass
class LoadedTask:
    """One task's splits (columns `text`, optional `text_pair`, `label`) and its label names."""

    config: TaskDataConfig
    splits: datasets.DatasetDict
    labels: list[str] | None  # None for regression

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def problem_type(self) -> str:
        return self.config.problem_type

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    def task_spec(self) -> dict[str, Any]:
        """The entry this task needs in `HydraBertConfig.tasks`."""
        return {
            "num_labels": self.num_labels,
            "labels": list(self.labels or []),
            "problem_type": self.problem_type,
            "weight": float(self.config.weight),
        }


# ---------------------------------------------------------------------------------------------
# Loading: raw tables from the Hub or local files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Where a split comes from; turns a problem into an error message that says so."""

    task: str
    split: str
    origin: str  # "file /path/x.csv" or "Hub dataset 'sst2', split 'validation'"

    def error(self, problem: str) -> HydraBertDataError:
        return HydraBertDataError(f"Task {self.task!r}, {self.split} split ({self.origin}): {problem}")


@dataclass
class _RawTable:
    """Columns as read, before validation; `locations[i]` says where row i is ("line 12")."""

    source: _Source
    columns: dict[str, list]
    locations: list[str] | None = None
    class_names: dict[str, list[str]] = field(default_factory=dict)

    def location(self, index: int) -> str:
        return self.locations[index] if self.locations is not None else f"row {index}"


def _uses_local_files(cfg: TaskDataConfig) -> bool:
    """The precedence rule: an existing data_dir, else the Hub name, else files by path."""
    if cfg.data_dir is not None and os.path.isdir(cfg.data_dir):
        return True
    if cfg.dataset_name:
        if cfg.data_dir is not None:
            logger.info(
                "Task %r: data_dir %s not found, using Hub dataset %r",
                cfg.name,
                cfg.data_dir,
                cfg.dataset_name,
            )
        return False
    if cfg.data_dir is not None:
        raise cfg._error(f"data_dir {cfg.data_dir!r} does not exist and no dataset_name is given")
    return True


def _load_hub_tables(cfg: TaskDataConfig) -> dict[str, _RawTable]:
    logger.info("Task %r: loading Hub dataset %r (%s)", cfg.name, cfg.dataset_name, cfg.dataset_config_name)
    loaded = datasets.load_dataset(cfg.dataset_name, cfg.dataset_config_name)
    tables = {}
    for hub_split, dataset in loaded.items():
        split = _SPLIT_ALIASES.get(hub_split)
        if split is None:
            logger.info("Task %r: ignoring Hub split %r", cfg.name, hub_split)
            continue
        source = _Source(cfg.name, split, f"Hub dataset {cfg.dataset_name!r}, split {hub_split!r}")
        tables[split] = _table_from_dataset(cfg, source, dataset)
    return tables


def _table_from_dataset(cfg: TaskDataConfig, source: _Source, dataset: datasets.Dataset) -> _RawTable:
    _require_columns(cfg, source, dataset.column_names)
    wanted = [c for c in (cfg.text_column, cfg.text_pair_column, cfg.label_column) if c is not None]
    return _RawTable(
        source,
        columns=dataset.select_columns(wanted).to_dict(),
        class_names=_class_names(dataset.features),
    )


def _class_names(features: datasets.Features) -> dict[str, list[str]]:
    """ClassLabel names per column, also inside a list (multi-label ids)."""
    names = {}
    for column, feature in features.items():
        inner = getattr(feature, "feature", None)  # List(ClassLabel(...))
        for candidate in (feature, inner):
            if isinstance(candidate, datasets.ClassLabel):
                names[column] = list(candidate.names)
    return names


def _load_local_tables(cfg: TaskDataConfig) -> dict[str, _RawTable]:
    files = {
        split: name
        for split, name in zip(SPLITS, (cfg.train_file, cfg.validation_file, cfg.test_file), strict=True)
        if name is not None
    }
    if not files:
        raise cfg._error(f"no train_file, validation_file or test_file given for data_dir {cfg.data_dir!r}")
    tables = {}
    for split, name in files.items():
        path = name if os.path.isabs(name) or cfg.data_dir is None else os.path.join(cfg.data_dir, name)
        source = _Source(cfg.name, split, f"file {path}")
        tables[split] = _read_file(cfg, source, path, split)
    return tables


def _read_file(cfg: TaskDataConfig, source: _Source, path: str, split: str) -> _RawTable:
    if not os.path.isfile(path):
        raise source.error("file not found" if not os.path.exists(path) else "is not a file")
    file_format = cfg.file_format or _infer_format(source, path)
    if file_format == "parquet":
        return _read_parquet(source, path)
    text = _read_text(source, path, cfg.encoding)
    if file_format == "labeled_lines":
        return _read_labeled_lines(cfg, source, text)
    if file_format in ("csv", "tsv"):
        return _read_delimited(cfg, source, text, "," if file_format == "csv" else "\t")
    if file_format == "jsonl":
        return _read_json_lines(cfg, source, text)
    return _read_json(cfg, source, text, split)


def _infer_format(source: _Source, path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension in _EXTENSION_FORMATS:
        return _EXTENSION_FORMATS[extension]
    hint = ""
    with open(path, "rb") as handle:
        if handle.read(64).lstrip().startswith(b"{"):
            hint = " (its first line looks like JSON: file_format='jsonl'?)"
    raise source.error(
        f"cannot infer the file format from the extension {extension or '(none)'!r}{hint}; "
        f"set file_format to one of {list(FILE_FORMATS)}"
    )


def _read_text(source: _Source, path: str, encoding: str) -> str:
    """The whole file decoded, or an error that says which byte and line failed and what to do."""
    with open(path, "rb") as handle:
        raw = handle.read()
    binary = source.error(
        f"contains NUL bytes: not a text file in encoding {encoding!r} (a binary file? UTF-16? "
        "set the task's `encoding` or `file_format` option)"
    )
    # UTF-16/32 text is full of NUL bytes; in other encodings they mean a binary file (checked before
    # decoding, so that the message says so rather than pointing at some undecodable byte).
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    if b"\x00" in raw and not wide:
        raise binary
    # utf-8-sig decodes plain UTF-8 identically and drops a byte-order mark if there is one.
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise source.error(
            f"cannot be decoded as {encoding!r} (byte 0x{raw[err.start]:02x} on line {line}); set the "
            "task's `encoding` option (e.g. 'latin-1' or 'cp1252')"
        ) from None
    if "\x00" in text:
        raise binary
    return text


def _read_labeled_lines(cfg: TaskDataConfig, source: _Source, text: str) -> _RawTable:
    """`label<sep>text` lines. Blank lines are skipped; text is stripped."""
    labels, texts, locations = [], [], []
    # Iterate a StringIO, not str.splitlines(): that also splits on U+0085 and U+2028, which
    # occur inside sentences of cp1252/latin-1 files (MR's ellipsis byte 0x85).
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        if not line.strip():
            continue
        label, separator, sentence = line.rstrip("\n").partition(cfg.label_separator)
        if not separator or not sentence.strip():
            raise source.error(f"line {number} has no text after the label: {line.rstrip()!r}")
        if not label.strip():
            raise source.error(f"line {number} has no label before the text: {line.rstrip()!r}")
        labels.append(label.strip())
        texts.append(sentence.strip())
        locations.append(f"line {number}")
    return _RawTable(source, {cfg.label_column: labels, cfg.text_column: texts}, locations)


def _read_delimited(cfg: TaskDataConfig, source: _Source, text: str, delimiter: str) -> _RawTable:
    """csv/tsv through the csv module: every cell stays a string, so no type guessing."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        rows = list(reader)
    except csv.Error as err:
        raise source.error(
            f"is not a readable {'csv' if delimiter == ',' else 'tsv'} file (line {reader.line_num}: {err})"
        ) from None
    rows = [row for row in rows if row]  # csv gives [] for blank lines
    header = list(cfg.column_names) if cfg.column_names is not None else (rows.pop(0) if rows else [])
    columns: dict[str, list] = {name: [] for name in header}
    for index, row in enumerate(rows):
        if len(row) != len(header):
            # A quote left open swallows the rest of the file into one field (a truncated file?).
            hint = " (an unclosed quote?)" if row and "\n" in row[-1] else ""
            raise source.error(
                f"row {index} has {len(row)} fields but the header has {len(header)}{hint}: {row!r}"
            )
        for name, value in zip(header, row, strict=True):
            columns[name].append(value)
    return _RawTable(source, columns)


def _read_json_lines(cfg: TaskDataConfig, source: _Source, text: str) -> _RawTable:
    records, locations = [], []
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise source.error(f"line {number} is not valid JSON ({err.msg})") from None
        locations.append(f"line {number}")
    return _records_table(cfg, source, records, locations)


def _read_json(cfg: TaskDataConfig, source: _Source, text: str, split: str) -> _RawTable:
    """A JSON document: a list of rows, or an object holding them (under `json_field`)."""
    if not text.strip():
        return _RawTable(source, {})  # an empty file: "the split is empty", not a JSON syntax error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # many ".json" files are JSON lines
            return _read_json_lines(cfg, source, text)
        raise source.error(
            f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from None
    key = cfg.json_field.get(split) if isinstance(cfg.json_field, dict) else cfg.json_field
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            keys = list(data) if isinstance(data, dict) else []
            raise source.error(f"json_field {key!r} not found; the top-level keys are {keys}")
        data = data[key]
    if isinstance(data, list):
        return _records_table(cfg, source, data, [f"record {i}" for i in range(len(data))])
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        if len({len(v) for v in data.values()}) == 1:  # columnar: {"text": [...], "label": [...]}
            return _RawTable(source, dict(data))
    keys = list(data) if isinstance(data, dict) else []
    raise source.error(f"holds no list of rows; set json_field to the key that does (top-level keys: {keys})")


def _records_table(cfg: TaskDataConfig, source: _Source, records: list, locations: list[str]) -> _RawTable:
    """Rows (dicts, or lists named by `column_names`) to columns; a missing key becomes None."""
    rows = []
    for record, where in zip(records, locations, strict=True):
        if isinstance(record, list):
            if cfg.column_names is None:
                raise source.error(f"{where} is a list; name its items with the column_names option")
            if len(record) != len(cfg.column_names):
                raise source.error(
                    f"{where} has {len(record)} items but column_names has {len(cfg.column_names)}"
                )
            record = dict(zip(cfg.column_names, record, strict=True))
        elif not isinstance(record, dict):
            raise source.error(f"{where} is a {type(record).__name__}, expected an object")
        rows.append(record)
    names = list(dict.fromkeys(key for row in rows for key in row))
    return _RawTable(source, {name: [row.get(name) for row in rows] for name in names}, locations)


def _read_parquet(source: _Source, path: str) -> _RawTable:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise source.error(f"is not a readable parquet file ({err})") from None
    # datasets stores its Features (ClassLabel names included) in the schema metadata.
    features = datasets.Features.from_arrow_schema(table.schema)
    return _RawTable(source, table.to_pydict(), class_names=_class_names(features))


# ---------------------------------------------------------------------------------------------
# Loading: validation and normalisation into text / text_pair / label
# ---------------------------------------------------------------------------------------------


@dataclass
class _Rows:
    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]  # raw label values
    locations: list[str]


def _require_columns(cfg: TaskDataConfig, source: _Source, available: Sequence[str]):
    for option in ("text_column", "text_pair_column", "label_column"):
        column = getattr(cfg, option)
        if column is not None and column not in available:
            raise source.error(
                f"column {column!r} ({option}) not found; available columns: {list(available)}"
            )


def _collect_rows(cfg: TaskDataConfig, table: _RawTable) -> _Rows:
    """Validated texts and raw labels. A row whose text is a list (CSAbstruct: an abstract's
    sentences, with a parallel list of labels) becomes one example per item."""
    source = table.source
    if not any(len(values) for values in table.columns.values()):
        # Before the column check: an empty file has no columns, and "column not found" would mislead.
        raise source.error("the split is empty")
    _require_columns(cfg, source, list(table.columns))
    texts_in = table.columns[cfg.text_column]
    pairs_in = table.columns[cfg.text_pair_column] if cfg.text_pair_column else None
    labels_in = table.columns[cfg.label_column]
    rows = _Rows([], [] if pairs_in is not None else None, [], [])

    def add(text, pair, label, where):
        rows.texts.append(_checked_text(source, text, where, cfg.text_column))
        if rows.pairs is not None:
            rows.pairs.append(_checked_text(source, pair, where, cfg.text_pair_column))
        rows.labels.append(label)
        rows.locations.append(where)

    for index, text in enumerate(texts_in):
        where = table.location(index)
        pair = pairs_in[index] if pairs_in is not None else None
        label = labels_in[index]
        if not isinstance(text, list):
            add(text, pair, label, where)
            continue
        for name, value in ((cfg.label_column, label), (cfg.text_pair_column, pair)):
            if name is not None and (not isinstance(value, list) or len(value) != len(text)):
                raise source.error(
                    f"{where}: column {cfg.text_column!r} holds a list of {len(text)} texts, "
                    f"so {name!r} must hold a list as long, got {value!r}"
                )
        for item, sentence in enumerate(text):
            add(sentence, pair[item] if pair is not None else None, label[item], f"{where}, item {item}")
    if not rows.texts:
        raise source.error("the split is empty")
    return rows


def _checked_text(source: _Source, value, where: str, column: str) -> str:
    if not isinstance(value, str):
        problem = "is missing" if value is None else f"is a {type(value).__name__}, not a string: {value!r}"
        raise source.error(f"{where}: the text in column {column!r} {problem}")
    if not value.strip():
        raise source.error(f"{where}: the text in column {column!r} is empty")
    _check_unicode(source, value, where, f"the text in column {column!r}")
    return value


def _check_unicode(source: _Source, value: str, where: str, what: str) -> None:
    """JSON can escape a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 writer (Arrow, config.json)
    accepts later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise source.error(
            f"{where}: {what} is not valid Unicode (lone surrogate {value[err.start]!r} at position {err.start})"
        ) from None


def _label_str(value) -> str:
    """One spelling per label whatever the format: 1, 1.0 and "1" are all "1"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _label_names_of(cfg: TaskDataConfig, source: _Source, value, where: str, class_names) -> list[str]:
    """The label name(s) a raw value stands for (a list, also for single-label tasks)."""
    if cfg.problem_type == "multi_label_classification":
        if isinstance(value, str):
            items = [item for item in value.split(MULTI_LABEL_SEPARATOR) if item.strip()]
        elif isinstance(value, list):
            items = value
        else:
            raise source.error(
                f"{where}: a multi-label value must be a list or a "
                f"{MULTI_LABEL_SEPARATOR!r}-separated string, got {value!r}"
            )
    else:
        items = [value]
    names = []
    for item in items:
        if item is None or isinstance(item, (list, dict)) or (isinstance(item, str) and not item.strip()):
            raise source.error(f"{where}: label {item!r} is missing or not a single value")
        if cfg.label_ids:
            item = _name_of_id(source, item, where, cfg.labels, "the task's labels")
        elif class_names is not None and isinstance(item, int) and not isinstance(item, bool):
            item = _name_of_id(source, item, where, class_names, "the dataset's ClassLabel names")
        name = _label_str(item)
        if cfg.label_transform == "coarse":
            name = name.split(":", 1)[0]
        _check_unicode(source, name, where, f"label {name!r}")
        names.append(name)
    return names


def _name_of_id(source: _Source, item, where: str, names: list[str], what: str) -> str:
    try:
        label_id = int(_label_str(item))
    except ValueError:
        raise source.error(f"{where}: label {item!r} is not an integer id into {what} {names}") from None
    if not 0 <= label_id < len(names):  # -1 marks unlabelled rows in Hub test splits
        raise source.error(f"{where}: label id {label_id} is outside {what} {names} (an unlabelled split?)")
    return names[label_id]


def _sorted_label_names(names) -> list[str]:
    """Numeric names in numeric order ("2" before "10"), others alphabetically."""
    names = set(names)
    for kind in (int, float):
        try:
            return sorted(names, key=kind)
        except ValueError:
            pass
    return sorted(names)


def _encode_labels(cfg: TaskDataConfig, source: _Source, rows: _Rows, labels, class_names) -> list:
    """Raw values to model targets: class id, float score, or multi-hot list."""
    if cfg.problem_type == "regression":
        return [
            _regression_target(source, value, where)
            for value, where in zip(rows.labels, rows.locations, strict=True)
        ]
    index = {name: i for i, name in enumerate(labels)}
    encoded = []
    for value, where in zip(rows.labels, rows.locations, strict=True):
        ids = []
        for name in _label_names_of(cfg, source, value, where, class_names):
            if name not in index:
                raise source.error(f"{where}: label {name!r} is not one of the task's labels {labels}")
            ids.append(index[name])
        if cfg.problem_type == "single_label_classification":
            encoded.append(ids[0])
        else:
            encoded.append([1.0 if i in ids else 0.0 for i in range(len(labels))])
    return encoded


def _regression_target(source: _Source, value, where: str) -> float:
    try:
        target = float(value)
    except (TypeError, ValueError):
        raise source.error(f"{where}: regression label {value!r} is not a number") from None
    if not math.isfinite(target):
        raise source.error(f"{where}: regression label {value!r} is not finite")
    return target


def _label_feature(cfg: TaskDataConfig, labels: list[str] | None):
    if cfg.problem_type == "regression":
        return datasets.Value("float32")
    if cfg.problem_type == "multi_label_classification":
        return datasets.List(datasets.Value("float32"), length=len(labels))
    return datasets.ClassLabel(names=labels)


def _resolve_labels(cfg: TaskDataConfig, rows, tables) -> list[str] | None:
    """The configured labels; else ClassLabel names; else the sorted values of every split."""
    if cfg.problem_type == "regression":
        return None
    if cfg.labels is not None:
        return cfg.labels
    for table in tables.values():
        names = table.class_names.get(cfg.label_column)
        if names is not None and cfg.label_transform is None:
            return list(names)
    seen = []
    for split in rows:
        class_names = tables[split].class_names.get(cfg.label_column)
        for value, where in zip(rows[split].labels, rows[split].locations, strict=True):
            seen.extend(_label_names_of(cfg, tables[split].source, value, where, class_names))
    if not seen:
        raise cfg._error("no labels found in the data; give them with the labels option")
    return _sorted_label_names(seen)


def load_task_splits(cfg: TaskDataConfig, seed: int = 42) -> LoadedTask:
    """Load, validate and normalise one task's splits.

    Columns: `text` (str), `text_pair` (when `text_pair_column` is set) and `label`: a
    `ClassLabel` id (single-label), a float (regression) or a multi-hot float list
    (multi-label). Raises `HydraBertDataError` on any problem with the data.
    """
    tables = _load_local_tables(cfg) if _uses_local_files(cfg) else _load_hub_tables(cfg)
    if not tables:
        raise cfg._error("the data have no train, validation or test split")
    rows = {split: _collect_rows(cfg, table) for split, table in tables.items()}
    labels = _resolve_labels(cfg, rows, tables)
    features = datasets.Features({"text": datasets.Value("string")})
    if cfg.text_pair_column:
        features["text_pair"] = datasets.Value("string")
    features["label"] = _label_feature(cfg, labels)
    splits = datasets.DatasetDict()
    for split in SPLITS:
        if split not in rows:
            continue
        columns = {"text": rows[split].texts}
        if rows[split].pairs is not None:
            columns["text_pair"] = rows[split].pairs
        class_names = tables[split].class_names.get(cfg.label_column)
        columns["label"] = _encode_labels(cfg, tables[split].source, rows[split], labels, class_names)
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    _carve_validation(cfg, splits, seed)
    return LoadedTask(config=cfg, splits=splits, labels=labels)


def _carve_validation(cfg: TaskDataConfig, splits: datasets.DatasetDict, seed: int):
    """A seeded validation split cut from train, only when the data bring none."""
    pct = cfg.validation_split_percentage
    if pct is None or "validation" in splits or "train" not in splits:
        return
    size = len(splits["train"])
    n_validation = max(1, round(size * pct / 100))
    if n_validation >= size:
        raise cfg._error(f"train has {size} rows: too few to carve a {pct}% validation split")
    parts = splits["train"].train_test_split(test_size=n_validation, shuffle=True, seed=seed)
    splits["train"], splits["validation"] = parts["train"], parts["test"]
    if "test" in splits:  # keep the train, validation, test order
        splits["test"] = splits.pop("test")


def load_tasks(configs: Sequence[TaskDataConfig], seed: int = 42) -> dict[str, LoadedTask]:
    """Load several tasks, keyed by name (names must be unique)."""
    loaded: dict[str, LoadedTask] = {}
    for cfg in configs:
        if cfg.name in loaded:
            raise cfg._error("two tasks have this name")
        loaded[cfg.name] = load_task_splits(cfg, seed=seed)
    return loaded


# ---------------------------------------------------------------------------------------------
# Tokenising
# ---------------------------------------------------------------------------------------------


def _tokenize_batch(batch, tokenizer, max_length, keys):
    pairs = batch.get("text_pair")
    encoded = tokenizer(batch["text"], pairs, truncation=True, max_length=max_length)
    out = {key: encoded[key] for key in keys}
    out["labels"] = batch["label"]
    out["length"] = [len(ids) for ids in encoded["input_ids"]]
    return out


def tokenize_task(
    splits: datasets.DatasetDict,
    tokenizer,
    max_length: int | None = None,
    cache_dir: str | None = None,
    batch_size: int = 1000,
) -> datasets.DatasetDict:
    """Tokenise every split once, without padding (the collator pads per batch).

    Columns: `input_ids`, `attention_mask`, `token_type_ids` (when the tokenizer makes them),
    `labels` and `length` (tokens per example, for length grouping). With `cache_dir`, the
    result is stored there under a fingerprint of (data, tokenizer, max_length) and reused.
    """
    max_length = max_length or tokenizer.model_max_length
    probe = tokenizer("probe")
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in probe]
    out = datasets.DatasetDict()
    for split, dataset in splits.items():
        features = datasets.Features({key: datasets.List(datasets.Value("int32")) for key in keys})
        features["labels"] = dataset.features["label"]
        features["length"] = datasets.Value("int32")
        # The source's content fingerprint (datasets hashes in-memory tables) makes the key
        # deterministic across runs, so every process of a launch finds the same cache file.
        fingerprint = Hasher.hash([_TOKENIZE_CACHE_VERSION, dataset._fingerprint, tokenizer, max_length])
        cache_file_name = None
        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
            cache_file_name = os.path.join(cache_dir, f"tokenized-{fingerprint}.arrow")
        out[split] = dataset.map(
            _tokenize_batch,
            batched=True,
            batch_size=batch_size,
            fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "keys": keys},
            remove_columns=dataset.column_names,
            features=features,
            new_fingerprint=fingerprint,
            cache_file_name=cache_file_name,
            desc=f"Tokenizing {split}",
        )
    return out


# ---------------------------------------------------------------------------------------------
# All tasks in one indexable dataset
# ---------------------------------------------------------------------------------------------


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
        return {name: list(dataset["length"]) for name, dataset in self.datasets.items()}


def build_multitask_dataset(
    tokenized: Mapping[str, datasets.Dataset], task_names: Sequence[str] | None = None
) -> tuple[MultiTaskDataset, dict[str, int]]:
    """One dataset over all tasks (for `DataLoader(batch_sampler=MultiTaskBatchSampler(...))`)
    and each task's offset in it. `task_names` fixes the task ids (default: `tokenized`'s order)."""
    dataset = MultiTaskDataset(tokenized, task_names=task_names)
    return dataset, dict(dataset.task_offsets)


# ---------------------------------------------------------------------------------------------
# Task sampling
# ---------------------------------------------------------------------------------------------


def _chunk(items: list[int], size: int) -> list[list[int]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _make_batches(
    indices: list[int],
    lengths: list[int],
    batch_size: int,
    rng: random.Random,
    group_by_length: bool,
    drop_last: bool,
) -> list[list[int]]:
    """Shuffled batches of `indices` (lengths[i] belongs to indices[i]), in shuffled order.

    With `group_by_length`, as transformers' LengthGroupedSampler: cut a random permutation
    into megabatches of up to 50 batches, sort each by length, then cut batches, so a batch
    holds examples of similar length and little goes to padding.
    """
    order = list(range(len(indices)))
    rng.shuffle(order)
    if group_by_length:
        megabatch_mult = max(1, min(len(order) // (batch_size * 4), 50))
        megabatches = _chunk(order, megabatch_mult * batch_size)
        order = [i for mega in megabatches for i in sorted(mega, key=lengths.__getitem__, reverse=True)]
    batches = [[indices[i] for i in batch] for batch in _chunk(order, batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()  # only the last can be short: megabatches are whole multiples of batch_size
    rng.shuffle(batches)
    return batches


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Batches of global indices into the tasks' concatenated train sets (task order = the order
    of `task_lengths`; see `task_offsets`). One task per batch unless `mixed=True`.

    Strategies choose which task each batch comes from; `n_i` is task i's batches per epoch:
    - proportional: every batch of every task once per epoch, in shuffled order (p_i ∝ n_i).
    - round_robin: tasks in turn, t0 t1 ... t0 t1 ...; the epoch ends when the smallest task
      runs out (as sentence-transformers' RoundRobinBatchSampler), so each task gives
      min(n_i) batches and larger tasks contribute a fresh random subset each epoch.
    - uniform (p_i equal) and temperature (p_i ∝ n_i ** (1 / temperature)): an epoch has as many
      batches as proportional (sum n_i); each batch's task is drawn by p_i and its batch comes
      from that task's stream, reshuffled whenever exhausted.
    - mixed=True: all examples shuffled together, batches mix tasks (proportional only).

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
        if strategy not in SAMPLING_STRATEGIES:
            raise ValueError(f"strategy must be one of {list(SAMPLING_STRATEGIES)}, got {strategy!r}")
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
        self.batch_size = batch_size
        self.strategy = strategy
        self.temperature = float(temperature)
        self.seed = seed
        self.drop_last = drop_last
        self.group_by_length = group_by_length
        self.mixed = mixed
        self.epoch = 0
        self.task_offsets: dict[str, int] = {}
        total = 0
        for name in self.task_names:
            self.task_offsets[name] = total
            total += len(self.lengths[name])
        self.num_examples = total
        self.batches_per_task = {
            name: self._count_batches(len(self.lengths[name])) for name in self.task_names
        }
        for name, count in self.batches_per_task.items():
            if count == 0:
                raise ValueError(
                    f"task {name!r} has {len(self.lengths[name])} examples: not one batch of "
                    f"{batch_size}{' with drop_last' if drop_last else ''}"
                )

    def _count_batches(self, num_examples: int) -> int:
        if self.drop_last:
            return num_examples // self.batch_size
        return math.ceil(num_examples / self.batch_size)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def task_probabilities(self) -> dict[str, float]:
        """The chance that a batch comes from each task, under the strategy."""
        counts = self.batches_per_task
        if self.mixed:
            weights = {name: float(len(self.lengths[name])) for name in self.task_names}
        elif self.strategy in ("uniform", "round_robin"):
            weights = dict.fromkeys(self.task_names, 1.0)
        elif self.strategy == "temperature":
            weights = {name: counts[name] ** (1.0 / self.temperature) for name in self.task_names}
        else:
            weights = {name: float(counts[name]) for name in self.task_names}
        total = sum(weights.values())
        return {name: weight / total for name, weight in weights.items()}

    def __len__(self) -> int:
        if self.mixed:
            return self._count_batches(self.num_examples)
        if self.strategy == "round_robin":
            return len(self.task_names) * min(self.batches_per_task.values())
        return sum(self.batches_per_task.values())

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches(self.epoch)

    def _rng(self, epoch: int, *parts) -> random.Random:
        # String seeds go through SHA-512: stable across processes, unlike hash().
        return random.Random("/".join(map(str, ("hydrabert", self.seed, epoch, *parts))))

    def _task_batches(self, name: str, epoch: int, shuffle_pass: int) -> list[list[int]]:
        lengths = self.lengths[name]
        offset = self.task_offsets[name]
        indices = list(range(offset, offset + len(lengths)))
        rng = self._rng(epoch, "task", name, shuffle_pass)
        return _make_batches(indices, lengths, self.batch_size, rng, self.group_by_length, self.drop_last)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of `epoch`, in order (what iterating yields after `set_epoch(epoch)`)."""
        if self.mixed:
            lengths = [n for name in self.task_names for n in self.lengths[name]]
            return _make_batches(
                list(range(self.num_examples)),
                lengths,
                self.batch_size,
                self._rng(epoch, "mixed"),
                self.group_by_length,
                self.drop_last,
            )
        if self.strategy == "proportional":
            return self._proportional(epoch)
        if self.strategy == "round_robin":
            return self._round_robin(epoch)
        return self._sampled(epoch)

    def _proportional(self, epoch: int) -> list[list[int]]:
        streams = {name: iter(self._task_batches(name, epoch, 0)) for name in self.task_names}
        order = [name for name in self.task_names for _ in range(self.batches_per_task[name])]
        self._rng(epoch, "order").shuffle(order)
        return [next(streams[name]) for name in order]

    def _round_robin(self, epoch: int) -> list[list[int]]:
        per_task = {name: self._task_batches(name, epoch, 0) for name in self.task_names}
        rounds = min(self.batches_per_task.values())
        return [per_task[name][r] for r in range(rounds) for name in self.task_names]

    def _sampled(self, epoch: int) -> list[list[int]]:
        probabilities = self.task_probabilities()
        order = self._rng(epoch, "order").choices(
            self.task_names, weights=[probabilities[name] for name in self.task_names], k=len(self)
        )
        streams: dict[str, list[list[int]]] = {name: [] for name in self.task_names}
        passes = dict.fromkeys(self.task_names, 0)
        batches = []
        for name in order:
            if not streams[name]:  # exhausted (or not started): reshuffle this task
                streams[name] = self._task_batches(name, epoch, passes[name])
                streams[name].reverse()  # pop() from the end = take in order
                passes[name] += 1
            batches.append(streams[name].pop())
        return batches


# ---------------------------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------------------------


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


@dataclass
class MultiTaskCollator:
    """Pads a batch to its longest row, stacks `labels` with the dtype their task needs and adds
    `task_ids` (one per row) from the rows' `task_id`. `length` is dropped."""

    tokenizer: Any
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        model_inputs = [
            {key: row[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in row}
            for row in features
        ]
        batch = dict(
            self.tokenizer.pad(
                model_inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
            )
        )
        labels = [row.get("labels") for row in features]
        if any(label is not None for label in labels):
            if any(label is None for label in labels):
                raise ValueError("some rows of the batch have labels and some do not")
            batch["labels"] = _stack_labels(labels)
        if "task_id" in features[0]:
            batch["task_ids"] = torch.tensor([row["task_id"] for row in features], dtype=torch.long)
        return batch


__all__ = [
    "FILE_FORMATS",
    "PROBLEM_TYPES",
    "SAMPLING_STRATEGIES",
    "HydraBertDataError",
    "LoadedTask",
    "MultiTaskBatchSampler",
    "MultiTaskCollator",
    "MultiTaskDataset",
    "TaskDataConfig",
    "build_multitask_dataset",
    "load_task_splits",
    "load_tasks",
    "tokenize_task",
]
