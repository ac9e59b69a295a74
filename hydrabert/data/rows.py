"""Checking and normalising a split as read into `text`, [`text_pair`] and `label` columns: texts
must be non-empty strings, labels map onto the task's label set (a `ClassLabel` for single-label
tasks). Each problem names the row (or line) it is in."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import datasets

from ..configuration_hydrabert import SCORE_PROBLEM_TYPES
from .tasks import TaskDataConfig, label_str

if TYPE_CHECKING:
    from .loading import Source

logger = logging.getLogger(__name__)

# Where a row came from ("line 12", "row 3, item 1"), carried until the labels are checked.
LOCATION = "__location__"
# A multi-label value given as one string ("sports,politics") is split on this.
MULTI_LABEL_SEPARATOR = ","
# An inferred label set is logged in full up to this many names (a 150-intent set, in part).
_LOGGED_LABELS = 40


def class_names(features: datasets.Features) -> dict[str, list[str]]:
    """ClassLabel names per column, also inside a list (multi-label ids)."""
    names = {}
    for column, feature in features.items():
        for candidate in (feature, getattr(feature, "feature", None)):  # List(ClassLabel(...))
            if isinstance(candidate, datasets.ClassLabel):
                names[column] = list(candidate.names)
    return names


def normalized_rows(
    cfg: TaskDataConfig, source: Source, raw: datasets.Dataset, missing_ok: bool = False
) -> datasets.Dataset:
    """text, [text_pair], label (its name; names for multi-label; a float for regression) and
    LOCATION. A row whose text is a list (CSAbstruct: an abstract's sentences, with a parallel list
    of labels) becomes one row per item. A label that `label_map` maps to null is None.

    `missing_ok` (a shared source, whose rows need not carry every task's label): an empty label cell,
    or no label column in this split, is None too, where a task's own data would raise."""
    if len(raw) == 0:
        raise source.error("the split is empty")
    for option in ("text_column", "text_pair_column", "label_column"):
        column = getattr(cfg, option)
        if missing_ok and option == "label_column":
            continue
        if column is not None and column not in raw.column_names:
            raise source.error(
                f"column {column!r} ({option}) not found; available columns: {raw.column_names}"
            )
    features = datasets.Features({"text": datasets.Value("string")})
    if cfg.text_pair_column:
        features["text_pair"] = datasets.Value("string")
    features["label"] = {
        "regression": datasets.Value("float32"),
        "sentence_similarity": datasets.Value("float32"),
        "multi_label_classification": datasets.List(datasets.Value("string")),
    }.get(cfg.problem_type, datasets.Value("string"))
    features[LOCATION] = datasets.Value("string")
    rows = raw.map(
        _normalize_batch,
        batched=True,
        with_indices=True,
        remove_columns=raw.column_names,
        features=features,
        fn_kwargs={
            "cfg": cfg,
            "source": source,
            "names": class_names(raw.features).get(cfg.label_column),
            "missing_ok": missing_ok,
        },
        desc="Checking rows",
    )
    if len(rows) == 0:
        raise source.error("the split is empty")
    return rows


def _normalize_batch(
    batch, indices: Sequence[int], cfg: TaskDataConfig, source: Source, names, missing_ok: bool
):
    pairs = batch[cfg.text_pair_column] if cfg.text_pair_column else [None] * len(indices)
    labels = batch[cfg.label_column] if cfg.label_column in batch else [None] * len(indices)
    locations = batch.get(LOCATION) or [f"row {index}" for index in indices]
    out = {"text": [], "label": [], LOCATION: []} | ({"text_pair": []} if cfg.text_pair_column else {})
    rows = zip(batch[cfg.text_column], pairs, labels, locations, strict=True)
    for row in rows:
        for text, pair, label, where in _items(cfg, source, *row, missing_ok=missing_ok):
            out["text"].append(_checked_text(source, text, where, cfg.text_column))
            if cfg.text_pair_column:
                out["text_pair"].append(_checked_text(source, pair, where, cfg.text_pair_column))
            missing = missing_ok and _is_empty(label)
            out["label"].append(None if missing else _label_value(cfg, source, label, where, names))
            out[LOCATION].append(where)
    return out


def _is_empty(value) -> bool:
    """An empty cell: no value, blank text, or NaN (how pandas-made files write one)."""
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    )


def _items(
    cfg: TaskDataConfig, source: Source, text, pair, label, where: str, missing_ok: bool = False
) -> list[tuple]:
    if not isinstance(text, list):
        return [(text, pair, label, where)]
    if missing_ok and label is None:  # a list of texts, none of them labelled for this task
        label = [None] * len(text)
    for name, value in ((cfg.label_column, label), (cfg.text_pair_column, pair)):
        if name is not None and (not isinstance(value, list) or len(value) != len(text)):
            raise source.error(
                f"{where}: column {cfg.text_column!r} holds a list of {len(text)} texts, "
                f"so {name!r} must hold a list as long, got {value!r}"
            )
    pairs = pair if pair is not None else [None] * len(text)
    return [(t, pairs[i], label[i], f"{where}, item {i}") for i, t in enumerate(text)]


def _checked_text(source: Source, value, where: str, column: str) -> str:
    if not isinstance(value, str):
        problem = "is missing" if value is None else f"is a {type(value).__name__}, not a string: {value!r}"
        raise source.error(f"{where}: the text in column {column!r} {problem}")
    if not value.strip():
        raise source.error(f"{where}: the text in column {column!r} is empty")
    _check_unicode(source, value, where, f"the text in column {column!r}")
    return value


def _check_unicode(source: Source, value: str, where: str, what: str) -> None:
    """JSON can escape a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 writer (Arrow,
    config.json) accepts later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise source.error(
            f"{where}: {what} is not valid Unicode (lone surrogate {value[err.start]!r} at position {err.start})"
        ) from None


def _label_value(cfg: TaskDataConfig, source: Source, value, where: str, names) -> Any:
    """A score (regression, sentence similarity), or the label name(s) a raw value stands for."""
    if cfg.problem_type in SCORE_PROBLEM_TYPES:
        try:
            target = float(value)
        except (TypeError, ValueError):
            raise source.error(f"{where}: {cfg.problem_type} label {value!r} is not a number") from None
        if not math.isfinite(target):
            raise source.error(f"{where}: {cfg.problem_type} label {value!r} is not finite")
        return target
    items = [value]
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
    label_names = [_label_name(cfg, source, item, where, names) for item in items]
    return label_names if cfg.problem_type == "multi_label_classification" else label_names[0]


def _label_name(cfg: TaskDataConfig, source: Source, item, where: str, names) -> str | None:
    single = item is not None and not isinstance(item, (list, dict))
    if (
        cfg.label_map is not None and single
    ):  # raw value -> name, or None (no label); the config rules out the rest
        raw = label_str(item)
        if raw in cfg.label_map:  # "" too: a map can say that an empty cell has no label
            return cfg.label_map[raw]
        if raw:
            raise source.error(f"{where}: label {raw!r} is not a key of label_map {list(cfg.label_map)}")
    if not single or (isinstance(item, str) and not item.strip()):
        raise source.error(f"{where}: label {item!r} is missing or not a single value")
    if cfg.label_ids:
        item = _name_of_id(source, item, where, cfg.labels, "the task's labels")
    elif names is not None and isinstance(item, int) and not isinstance(item, bool):
        item = _name_of_id(source, item, where, names, "the dataset's ClassLabel names")
    name = label_str(item)
    if cfg.label_transform == "coarse":
        name = name.split(":", 1)[0]
    _check_unicode(source, name, where, f"label {name!r}")
    return name


def _name_of_id(source: Source, item, where: str, names: list[str], what: str) -> str:
    try:
        label_id = int(label_str(item))
    except ValueError:
        raise source.error(f"{where}: label {item!r} is not an integer id into {what} {names}") from None
    if not 0 <= label_id < len(names):  # -1 marks unlabelled rows in Hub test splits
        raise source.error(f"{where}: label id {label_id} is outside {what} {names} (an unlabelled split?)")
    return names[label_id]


def resolve_labels(
    cfg: TaskDataConfig, splits: list[datasets.Dataset], names: list, split_names: Sequence[str] = ()
) -> list[str] | None:
    """The configured labels; else the data's ClassLabel names; else the sorted names in every split.
    An inferred label set is logged: it fixes the head's label ids."""
    if cfg.problem_type in SCORE_PROBLEM_TYPES:
        return None
    if cfg.labels is not None:
        return cfg.labels
    if cfg.label_map is not None:
        labels = cfg.mapped_labels()
        _log_inferred(cfg, labels, "taken from label_map's values, in their order")
        return labels
    if cfg.label_transform is None and any(names):
        labels = next(n for n in names if n)
        _log_inferred(cfg, labels, "taken from the data's ClassLabel names, in their order")
        return labels
    seen = set()
    for split in splits:
        column = split["label"]
        seen.update(
            column
            if cfg.problem_type == "single_label_classification"
            else (n for row in column for n in row)
        )
    if not seen:
        raise cfg.error("no labels found in the data; give them with the labels option")
    where = f"inferred from {', '.join(split_names)}" if split_names else "inferred from the data"
    for kind in (int, float):  # numeric names in numeric order ("2" before "10"), others alphabetically
        try:
            labels = sorted(seen, key=kind)
            _log_inferred(cfg, labels, f"{where}, sorted as numbers")
            return labels
        except ValueError:
            pass
    labels = sorted(seen)
    _log_inferred(cfg, labels, f"{where}, sorted")
    return labels


def _log_inferred(cfg: TaskDataConfig, labels: list[str], how: str) -> None:
    shown = ", ".join(labels[:_LOGGED_LABELS]) + (", ..." if len(labels) > _LOGGED_LABELS else "")
    logger.info("Task %r: %d labels %s (set `labels` to fix the ids): %s", cfg.name, len(labels), how, shown)


def encode_labels(cfg: TaskDataConfig, source: Source, rows, labels: list[str] | None):
    """Label names to targets: a ClassLabel id (single-label) or a multi-hot float list. A stream
    (`datasets.IterableDataset`) is encoded as it is read."""
    if cfg.problem_type in SCORE_PROBLEM_TYPES:
        return rows
    if isinstance(rows, datasets.IterableDataset):
        return rows.map(
            _encode_batch, batched=True, fn_kwargs={"cfg": cfg, "source": source, "labels": labels}
        )
    targets = _encode_batch({"label": rows["label"], LOCATION: rows[LOCATION]}, cfg, source, labels)["label"]
    if cfg.problem_type == "single_label_classification":
        feature = datasets.ClassLabel(names=labels)
    else:
        feature = datasets.List(datasets.Value("float32"), length=len(labels))
    return (
        rows.remove_columns("label")
        .add_column("label", targets, feature=feature)
        .select_columns(rows.column_names)
    )


def _encode_batch(batch, cfg: TaskDataConfig, source: Source, labels: list[str]) -> dict[str, list]:
    """A batch's label names as class ids or multi-hot rows; a name outside `labels` is an error naming its row."""
    index = {name: i for i, name in enumerate(labels)}
    single = cfg.problem_type == "single_label_classification"
    targets = []
    for value, where in zip(batch["label"], batch[LOCATION], strict=True):
        names = [value] if single else value
        unknown = [name for name in names if name not in index]
        if unknown:
            raise source.error(f"{where}: label {unknown[0]!r} is not one of the task's labels {labels}")
        if single:
            targets.append(index[value])
        else:
            hot = [0.0] * len(labels)
            for name in names:
                hot[index[name]] = 1.0
            targets.append(hot)
    return {"label": targets}


__all__ = [
    "LOCATION",
    "MULTI_LABEL_SEPARATOR",
    "class_names",
    "encode_labels",
    "normalized_rows",
    "resolve_labels",
]
