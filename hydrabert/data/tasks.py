"""What one task's data is: `TaskDataConfig` (where it comes from, how to read it, checked when
built) and `LoadedTask` (its splits and label names, once loaded)."""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np

from ..configuration_hydrabert import PROBLEM_TYPES, SCORE_PROBLEM_TYPES, normalize_task_spec

logger = logging.getLogger(__name__)

FILE_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "labeled_lines")
LABEL_TRANSFORMS = ("coarse",)
# csv/tsv quoting -> the csv module's constant (pandas, under the csv builder, takes the same).
QUOTING = {"minimal": 0, "none": 3}
# The class_weights value computed from the data (the other: an explicit list).
CLASS_WEIGHTING = "balanced"
SPLITS = ("train", "validation", "test")
# Where and how a task's rows are read: a task with a `source` takes these from that task.
SOURCE_FIELDS = (
    "dataset_name",
    "dataset_config_name",
    "data_dir",
    "train_file",
    "validation_file",
    "test_file",
    "file_format",
    "label_separator",
    "encoding",
    "text_column",
    "text_pair_column",
    "column_names",
    "quoting",
    "json_field",
    "validation_split_percentage",
)


class HydraBertDataError(ValueError):
    """A task's data cannot be used; the message names the task, the file and the problem."""


@dataclass
class TaskDataConfig:
    """Where one task's data comes from and how to read it. Every field, its type, default and meaning:
    docs/task-config.md (tests/test_task_config_docs.py keeps the two in step).

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
    file_format: str | None = None  # None: from the extension
    label_separator: str = " "
    label_transform: str | None = None
    encoding: str = "utf-8"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # Rows may have fewer fields than names (STS-B's 7 and 9): the missing ones read as empty.
    column_names: list[str] | None = None
    quoting: str = "minimal"
    json_field: str | dict[str, str] | None = None
    labels: list[str] | None = None
    label_ids: bool = False
    problem_type: str = "single_label_classification"
    weight: float = 1.0
    validation_split_percentage: float | None = None
    class_weights: str | list[float] | None = None
    # A shared source: the rows of that task's data, encoded once per step for every task that labels them.
    source: str | None = None
    label_map: dict[str, str | None] | None = None
    # Keys of HydraBertModel.HEADS / .LOSSES, checked when the model is built (docs/extending.md).
    head: str = "linear"
    loss: str | None = None
    streaming: bool = False
    num_rows: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise HydraBertDataError(f"TaskDataConfig.name must be a non-empty string, got {self.name!r}")
        if not self.name.isidentifier():
            # Checked here, before any data is read: the name becomes a head (heads.<name>) and metric prefix.
            raise self.error(
                "name must be a valid Python identifier (letters, digits, _): it names the model's head"
            )
        if self.labels is not None:
            if self.problem_type in SCORE_PROBLEM_TYPES:  # the data hold scores, one per row
                raise self.error(f"labels are for classification tasks; a {self.problem_type} task has none")
            self.labels = [label_str(label) for label in self.labels]
        self._check_choice("file_format", self.file_format, FILE_FORMATS, optional=True)
        self._check_choice("quoting", self.quoting, QUOTING)
        if self.problem_type == "sentence_similarity" and self.source is not None:
            raise self.error(
                "a sentence_similarity task embeds each sentence of a pair on its own and cannot share another "
                "task's rows (source): give it its own data"
            )
        if (
            self.problem_type == "sentence_similarity"
            and self.source is None
            and self.text_pair_column is None
        ):
            raise self.error("a sentence_similarity task reads sentence pairs: give text_pair_column")
        self._check_choice("label_transform", self.label_transform, LABEL_TRANSFORMS, optional=True)
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise self.error(f"encoding {self.encoding!r} is not a known codec") from None
        if not self.label_separator:
            raise self.error("label_separator must not be empty")
        pct = self.validation_split_percentage
        if pct is not None and not 0 < pct < 100:
            raise self.error(f"validation_split_percentage must be in (0, 100), got {pct!r}")
        if self.class_weights is not None and not isinstance(self.class_weights, list):
            if self.class_weights != CLASS_WEIGHTING:
                raise self.error(
                    f"class_weights must be {CLASS_WEIGHTING!r} or a list of numbers, one per label; "
                    f"got {self.class_weights!r}"
                )
            if self.problem_type != "single_label_classification":
                raise self.error(
                    f"class_weights is for single_label_classification tasks, not {self.problem_type}"
                )
        if self.label_ids and self.labels is None:
            raise self.error("label_ids=True needs the label names in labels")
        self.label_map = self._checked_label_map()
        self._check_streaming()
        if self.source is not None:
            self._check_source()
        elif not (
            self.dataset_name or self.data_dir or self.train_file or self.validation_file or self.test_file
        ):
            raise self.error("give a dataset_name (Hub), a data_dir, or data files")
        self.check_spec()

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

    def error(self, problem: str) -> HydraBertDataError:
        return HydraBertDataError(f"Task {self.name!r}: {problem}")

    def _check_choice(self, field_name: str, value, choices, optional: bool = False):
        if value is None and optional:
            return
        if value not in choices:
            raise self.error(f"{field_name} must be one of {list(choices)}, got {value!r}")

    def _check_source(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise self.error(f"source must be the name of another task, got {self.source!r}")
        if self.source == self.name:
            raise self.error("source names the task itself; give the name of the task whose data it reads")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        given = [name for name in SOURCE_FIELDS if getattr(self, name) != defaults[name]]
        if given:
            raise self.error(
                f"source={self.source!r}: the rows come from that task's data, so {', '.join(given)} belong to "
                f"task {self.source!r} only; remove them here (this task gives its label_column and label settings)"
            )

    def _checked_label_map(self) -> dict[str, str | None] | None:
        if self.label_map is None:
            return None
        if not isinstance(self.label_map, Mapping) or not self.label_map:
            raise self.error(
                f"label_map must be a non-empty mapping of raw label -> label name or null, got {self.label_map!r}"
            )
        if self.problem_type != "single_label_classification":
            raise self.error(f"label_map is for single_label_classification tasks, not {self.problem_type}")
        for option in ("label_ids", "label_transform"):
            if getattr(self, option):
                raise self.error(
                    f"label_map and {option} cannot be combined: label_map maps raw values to label names"
                )
        mapped = {
            label_str(raw): None if name is None else label_str(name) for raw, name in self.label_map.items()
        }
        if all(name is None for name in mapped.values()):
            raise self.error("label_map maps every value to null: no row would have a label")
        if self.labels is not None:
            unknown = sorted({name for name in mapped.values() if name is not None} - set(self.labels))
            if unknown:
                raise self.error(f"label_map maps to {unknown}, which are not in labels {self.labels}")
        return mapped

    def mapped_labels(self) -> list[str] | None:
        """The label names label_map maps to, in the map's order (the task's labels when none are given)."""
        if self.label_map is None:
            return None
        return list(dict.fromkeys(name for name in self.label_map.values() if name is not None))

    def _check_streaming(self) -> None:
        """What a streamed train split cannot do, refused before anything is read: it is never read whole, so
        nothing can be counted, inferred or carved from it up front."""
        if self.num_rows is not None and (
            isinstance(self.num_rows, bool) or not isinstance(self.num_rows, int) or self.num_rows < 1
        ):
            raise self.error(f"num_rows must be a positive integer, got {self.num_rows!r}")
        if not self.streaming:
            return
        refused = {
            "source": "a shared source's rows train as one unit, which is not streamed",
            "validation_split_percentage": "no validation split can be carved from a stream: give validation_file",
        }
        for option, why in refused.items():
            if getattr(self, option) is not None:
                raise self.error(f"streaming: {option} is not available ({why})")
        if self.class_weights == CLASS_WEIGHTING:
            raise self.error(
                'streaming: class_weights="balanced" counts the train split\'s labels, which a stream does not '
                "read up front; give the weights as a list"
            )
        if self.problem_type not in SCORE_PROBLEM_TYPES and self.labels is None:
            raise self.error(
                "streaming: give the label names in labels (a stream is not read up front to find them)"
            )
        if self.file_format == "json" or self.json_field is not None:
            raise self.error(
                "streaming: a JSON document is read whole; give JSON lines (file_format='jsonl')"
            )

    def check_spec(self, labels: list[str] | None = None) -> None:
        """What the model's config holds of this task (problem_type, labels, weight, a list of class_weights,
        head, loss), checked by the config's own validator: before the data are read, and again once they
        gave the labels (`resolved_class_weights`). "balanced" weights are the data's own, checked above."""
        labels = self.labels if labels is None else labels
        weights = self.class_weights if isinstance(self.class_weights, list) else None
        spec = {"problem_type": self.problem_type, "labels": labels, "weight": self.weight}
        spec.update(class_weights=weights, head=self.head, loss=self.loss)
        try:
            normalize_task_spec(spec, labels_unknown=labels is None)
        except ValueError as err:
            raise self.error(str(err)) from None


@dataclass
class SharedSource:
    """The rows of one data source that several tasks label, read once: splits with `text`, optional
    `text_pair`, and `label`, a struct `{task: label or None}` (None: the row has no label for that task).
    Rows with no label for any task are left out. Training reads it as one unit named `name`."""

    tasks: list[str]
    splits: datasets.DatasetDict

    @property
    def name(self) -> str:
        return "+".join(self.tasks)


@dataclass
class LoadedTask:
    """One task's splits (columns `text`, optional `text_pair`, `label`), its label names and its resolved
    class weights (a float per label, or None). A task of a shared source has the rows that carry its label
    here (for evaluation and its class weights), and the source in `shared`."""

    config: TaskDataConfig
    splits: datasets.DatasetDict
    labels: list[str] | None  # None for score tasks (regression, sentence_similarity)
    shared: SharedSource | None = None
    # A streamed task's train split (`streaming: true`): a datasets.IterableDataset, not in `splits`.
    stream: datasets.IterableDataset | None = None
    class_weights: list[float] | None = field(init=False, default=None)

    def __post_init__(self):
        self.class_weights = resolved_class_weights(self.config, self.splits, self.labels)

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
            "labels": None if self.labels is None else list(self.labels),
            "problem_type": self.problem_type,
            "weight": float(self.config.weight),
            "class_weights": None if self.class_weights is None else list(self.class_weights),
            "head": self.config.head,
            "loss": self.config.loss,
        }


def resolved_class_weights(
    cfg: TaskDataConfig, splits: datasets.DatasetDict, labels: list[str] | None
) -> list[float] | None:
    """The task's class weights as one float per label: the configured list, or "balanced" computed from the
    train split's label counts as scikit-learn's `compute_class_weight("balanced")` does."""
    if cfg.class_weights is None:
        return None
    cfg.check_spec(labels)  # a list's count, now that the data gave the labels
    if cfg.class_weights != CLASS_WEIGHTING:
        return [float(value) for value in cfg.class_weights]
    if "train" not in splits:
        raise cfg.error('class_weights="balanced" needs a train split to count the labels in')
    label_ids = np.asarray(splits["train"]["label"])
    counts = np.bincount(label_ids, minlength=len(labels))
    absent = [label for label, count in zip(labels, counts, strict=True) if count == 0]
    if absent:
        raise cfg.error(
            f'class_weights="balanced": label(s) {absent} have no row in the train split, so their weight '
            "would be infinite; give class_weights as a list, or drop those labels"
        )
    from sklearn.utils.class_weight import compute_class_weight

    weights = compute_class_weight("balanced", classes=np.arange(len(labels)), y=label_ids)
    logger.info(
        "Task %r: class_weights 'balanced' from the %d train rows: %s",
        cfg.name,
        int(counts.sum()),
        ", ".join(
            f"{label} {weight:.4g} ({count} row{'s' if count != 1 else ''})"
            for label, weight, count in zip(labels, weights, counts, strict=True)
        ),
    )
    return [float(weight) for weight in weights]


def label_str(value) -> str:
    """One spelling per label whatever the format: 1, 1.0 and "1" are all "1"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


__all__ = [
    "CLASS_WEIGHTING",
    "FILE_FORMATS",
    "LABEL_TRANSFORMS",
    "PROBLEM_TYPES",
    "SOURCE_FIELDS",
    "SPLITS",
    "HydraBertDataError",
    "LoadedTask",
    "SharedSource",
    "TaskDataConfig",
    "label_str",
    "resolved_class_weights",
]
