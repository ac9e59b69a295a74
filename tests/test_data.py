"""Tests for hydrabert.data: readers, errors, tokenising, task sampling and collation.

Offline and fast: every data file is a tiny one written to tmp_path; the tokenizer is a
WordPiece vocabulary built in code. The real data sets in ../shared/data appear only in the
`slow` test at the end.
"""

import csv
import dataclasses
import json
import logging
import math
import os
import random
import tempfile
from collections import Counter

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader
from transformers import BertTokenizer

from hydrabert.data import (
    HydraBertDataError,
    MultiTaskBatchSampler,
    MultiTaskCollator,
    TaskDataConfig,
    build_multitask_dataset,
    load_task_splits,
    load_tasks,
    tokenize_task,
)

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

# Text with the characters that trip csv/json writers: commas, quotes, a semicolon, non-ASCII.
ROWS = [
    ("pos", 'a good movie , "really"'),
    ("neg", "bad; awful film"),
    ("pos", "café au lait"),
    ("neu", "just ok\tfine"),
]


@pytest.fixture(scope="module")
def tokenizer():
    words = "a good bad movie film just ok fine how did the what is".split()
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    return BertTokenizer(vocab=vocab)


# ---------------------------------------------------------------------------------------------
# Writers: the same rows in every format
# ---------------------------------------------------------------------------------------------


def write_labeled_lines(path, rows, encoding="utf-8"):
    with open(path, "w", encoding=encoding) as handle:
        handle.writelines(f"{label} {text}\n" for label, text in rows)


def write_delimited(path, rows, delimiter):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["sentence", "polarity"])
        writer.writerows((text, label) for label, text in rows)


def write_json(path, rows, lines):
    records = [{"sentence": text, "polarity": label, "extra": 1} for label, text in rows]
    with open(path, "w", encoding="utf-8") as handle:
        if lines:
            handle.writelines(json.dumps(record) + "\n" for record in records)
        else:
            json.dump(records, handle)


def write_parquet(path, rows):
    table = pa.table({"sentence": [t for _, t in rows], "polarity": [label for label, _ in rows]})
    pq.write_table(table, path)


WRITERS = {
    "labeled_lines": ("train.txt", write_labeled_lines),
    "csv": ("train.csv", lambda p, r: write_delimited(p, r, ",")),
    "tsv": ("train.tsv", lambda p, r: write_delimited(p, r, "\t")),
    "json": ("train.json", lambda p, r: write_json(p, r, lines=False)),
    "jsonl": ("train.jsonl", lambda p, r: write_json(p, r, lines=True)),
    "parquet": ("train.parquet", write_parquet),
}


def config_for(file_format, directory, file_name, **overrides):
    options = {"name": "sentiment", "data_dir": str(directory), "train_file": file_name}
    if file_format == "labeled_lines":
        options["file_format"] = "labeled_lines"
    else:  # format inferred from the extension; columns named in the config
        options.update(text_column="sentence", label_column="polarity")
    options.update(overrides)
    return TaskDataConfig.from_dict(options)


def load_rows(tmp_path, rows, file_name="train.txt", encoding="utf-8", **overrides):
    write_labeled_lines(tmp_path / file_name, rows, encoding=encoding)
    return load_task_splits(config_for("labeled_lines", tmp_path, file_name, encoding=encoding, **overrides))


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", sorted(WRITERS))
def test_every_format_reads_the_same_dataset(tmp_path, file_format):
    file_name, write = WRITERS[file_format]
    write(tmp_path / file_name, ROWS)
    task = load_task_splits(config_for(file_format, tmp_path, file_name))
    assert task.labels == ["neg", "neu", "pos"]
    assert task.splits["train"].column_names == ["text", "label"]
    assert task.splits["train"].to_dict() == {"text": [t for _, t in ROWS], "label": [2, 0, 2, 1]}
    assert task.splits["train"].features["label"].names == task.labels


def test_numeric_labels_agree_across_formats(tmp_path):
    rows = [("10", "a"), ("2", "b"), ("0", "c")]
    write_labeled_lines(tmp_path / "train.txt", rows)
    write_json(tmp_path / "train.jsonl", [(int(label), text) for label, text in rows], lines=True)
    from_lines = load_task_splits(config_for("labeled_lines", tmp_path, "train.txt"))
    from_json = load_task_splits(config_for("jsonl", tmp_path, "train.jsonl"))
    assert from_lines.labels == from_json.labels == ["0", "2", "10"]  # numeric order, not "10" < "2"
    assert from_lines.splits["train"].to_dict() == from_json.splits["train"].to_dict()


def test_trec_style_latin1_lines_with_coarse_labels(tmp_path):
    lines = [
        ("DESC:manner", "How did serfdom develop in and then leave Russia ?"),
        ("ENTY:cremat", "What films featured the character Popeye Doyle ?"),
        ("HUM:ind", "Who was Gonzalo Ð ?"),  # Ð is byte 0xD0 in latin-1: not valid UTF-8 here
        ("DESC:def", "What is an atom ?"),
    ]
    task = load_rows(tmp_path, lines, encoding="latin-1", label_transform="coarse")
    assert task.labels == ["DESC", "ENTY", "HUM"]
    assert task.splits["train"]["label"] == [0, 1, 2, 0]
    assert task.splits["train"][2]["text"] == "Who was Gonzalo Ð ?"


def test_labeled_lines_skip_blank_lines_and_strip_text(tmp_path):
    (tmp_path / "train.txt").write_text("1 good movie . \n\n0 bad\r\n", encoding="utf-8")
    task = load_task_splits(config_for("labeled_lines", tmp_path, "train.txt"))
    assert task.splits["train"].to_dict() == {"text": ["good movie .", "bad"], "label": [1, 0]}


def test_labeled_lines_do_not_split_on_unicode_line_breaks(tmp_path):
    # MR is cp1252: byte 0x85 is an ellipsis, U+0085 (NEL) if misread as latin-1; either way it
    # sits inside a sentence and must not end the line (str.splitlines() would split there).
    (tmp_path / "train.txt").write_bytes(b"0 so slow \x85 and dull\n1 fine\n")
    task = load_task_splits(config_for("labeled_lines", tmp_path, "train.txt", encoding="cp1252"))
    assert task.splits["train"]["text"] == ["so slow … and dull", "fine"]
    task = load_task_splits(config_for("labeled_lines", tmp_path, "train.txt", encoding="latin-1"))
    assert len(task.splits["train"]) == 2


def test_label_ids_map_through_configured_names(tmp_path):
    task = load_rows(tmp_path, [("1", "a"), ("0", "b")], labels=["negative", "positive"], label_ids=True)
    assert task.labels == ["negative", "positive"]
    assert task.splits["train"]["label"] == [1, 0]


def test_configured_labels_fix_the_ids(tmp_path):
    task = load_rows(tmp_path, [("pos", "a"), ("neg", "b")], labels=["pos", "neg", "neu"])
    assert task.splits["train"]["label"] == [0, 1]
    assert task.task_spec() == {
        "num_labels": 3,
        "labels": ["pos", "neg", "neu"],
        "problem_type": "single_label_classification",
        "weight": 1.0,
        "class_weights": None,
        "head": "linear",
        "loss": None,
    }


def test_text_pairs_from_csv(tmp_path):
    with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [["premise", "hypothesis", "label"], ["a", "b", "yes"], ["c", "d", "no"]]
        )
    cfg = TaskDataConfig(
        name="nli",
        data_dir=str(tmp_path),
        train_file="train.csv",
        text_column="premise",
        text_pair_column="hypothesis",
    )
    split = load_task_splits(cfg).splits["train"]
    assert split.to_dict() == {"text": ["a", "c"], "text_pair": ["b", "d"], "label": [1, 0]}


def test_multi_label_and_regression_targets(tmp_path):
    records = [{"text": "a", "tags": ["x", "z"], "score": 0.5}, {"text": "b", "tags": "y", "score": "2"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    multi = load_task_splits(
        TaskDataConfig(
            name="tags",
            data_dir=str(tmp_path),
            train_file="train.jsonl",
            label_column="tags",
            problem_type="multi_label_classification",
        )
    )
    assert multi.labels == ["x", "y", "z"]
    assert multi.splits["train"]["label"] == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    regression = load_task_splits(
        TaskDataConfig(
            name="score",
            data_dir=str(tmp_path),
            train_file="train.jsonl",
            label_column="score",
            problem_type="regression",
        )
    )
    assert regression.labels is None and regression.num_labels == 1
    assert regression.splits["train"]["label"] == [0.5, 2.0]


def test_rows_holding_lists_become_one_example_per_item(tmp_path):
    # CSAbstruct: one abstract per line, parallel lists of sentences and labels.
    record = {
        "abstract_id": 0,
        "sentences": ["we study x .", "it works ."],
        "labels": ["objective", "result"],
    }
    (tmp_path / "train.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    cfg = TaskDataConfig(
        name="roles",
        data_dir=str(tmp_path),
        train_file="train.jsonl",
        text_column="sentences",
        label_column="labels",
    )
    assert load_task_splits(cfg).splits["train"].to_dict() == {
        "text": ["we study x .", "it works ."],
        "label": [0, 1],
    }


def test_json_field_per_split_and_list_rows(tmp_path):
    # clinc150: one JSON object, each split a list of [text, intent] pairs under its own key.
    data = {"train": [["hi there", "greet"], ["bye now", "leave"]], "val": [["hello", "greet"]]}
    (tmp_path / "data.json").write_text(json.dumps(data), encoding="utf-8")
    cfg = TaskDataConfig(
        name="intent",
        data_dir=str(tmp_path),
        train_file="data.json",
        validation_file="data.json",
        json_field={"train": "train", "validation": "val"},
        column_names=["text", "label"],
    )
    task = load_task_splits(cfg)
    assert task.labels == ["greet", "leave"]
    assert task.splits["validation"].to_dict() == {"text": ["hello"], "label": [0]}


def test_parquet_keeps_classlabel_names(tmp_path):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["zebra", "apple"])}
    )
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}, features=features).to_parquet(
        str(tmp_path / "train.parquet")
    )
    task = load_task_splits(TaskDataConfig(name="t", data_dir=str(tmp_path), train_file="train.parquet"))
    assert task.labels == ["zebra", "apple"]  # the dataset's order, not sorted
    assert task.splits["train"]["label"] == [0, 1]


def test_validation_split_is_carved_from_train_with_the_seed(tmp_path):
    rows = [(str(i % 2), f"text {i}") for i in range(20)]
    first = load_rows(tmp_path, rows, validation_split_percentage=25)
    again = load_rows(tmp_path, rows, validation_split_percentage=25)
    other = load_task_splits(
        config_for("labeled_lines", tmp_path, "train.txt", validation_split_percentage=25), seed=7
    )
    assert list(first.splits) == ["train", "validation"]
    train, validation = list(first.splits["train"]["text"]), list(first.splits["validation"]["text"])
    assert len(validation) == 5 and sorted(train + validation) == sorted(t for _, t in rows)
    assert again.splits["validation"]["text"] == validation
    assert other.splits["validation"]["text"] != validation


def test_inferred_labels_and_a_carved_validation_split_are_logged(tmp_path, caplog):
    rows = [(label, f"text {i}") for i, label in enumerate(["pos", "neg", "neu", "pos"] * 5)]
    with caplog.at_level(logging.INFO, logger="hydrabert"):
        load_rows(tmp_path, rows, validation_split_percentage=10)
    messages = [record.getMessage() for record in caplog.records]
    assert (
        "Task 'sentiment': 3 labels inferred from train, sorted (set `labels` to fix the ids): neg, neu, pos"
        in messages
    )
    assert (
        "Task 'sentiment': no validation split; carved 10% of train (2 rows, seed 42), 18 rows left to train on"
        in messages
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hydrabert"):  # labels given: nothing inferred, nothing said
        load_rows(tmp_path, rows, labels=["pos", "neg", "neu"])
    assert not [r for r in caplog.records if "labels" in r.getMessage()]


def test_numeric_and_classlabel_label_orders_are_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="hydrabert"):
        load_rows(tmp_path, [("10", "a"), ("2", "b")])
        table = pa.table({"sentence": ["x", "y"], "polarity": [1, 0]})
        features = datasets.Features(
            {"sentence": datasets.Value("string"), "polarity": datasets.ClassLabel(names=["zebra", "apple"])}
        )
        datasets.Dataset(table.cast(features.arrow_schema)).to_parquet(tmp_path / "train.parquet")
        load_task_splits(config_for("parquet", tmp_path, "train.parquet"))
    messages = [record.getMessage() for record in caplog.records]
    assert any(
        "2 labels inferred from train, sorted as numbers (set `labels` to fix the ids): 2, 10" in m
        for m in messages
    )
    assert any(
        "2 labels taken from the data's ClassLabel names, in their order" in m and "zebra, apple" in m
        for m in messages
    )


def test_balanced_class_weights_come_from_the_train_split_counts(tmp_path, caplog):
    train = [("pos", "a")] * 6 + [("neg", "b")] * 3 + [("neu", "c")]
    write_labeled_lines(tmp_path / "train.txt", train)
    write_labeled_lines(tmp_path / "test.txt", [("neu", "c")] * 5)  # other splits do not count
    options = {"test_file": "test.txt", "class_weights": "balanced"}
    with caplog.at_level(logging.INFO, logger="hydrabert"):
        task = load_task_splits(config_for("labeled_lines", tmp_path, "train.txt", **options))
    assert task.labels == ["neg", "neu", "pos"]
    # scikit-learn's compute_class_weight("balanced"): n_rows / (n_labels * rows of the label)
    expected = [10 / (3 * 3), 10 / (3 * 1), 10 / (3 * 6)]
    assert task.class_weights == pytest.approx(expected)
    assert task.task_spec()["class_weights"] == pytest.approx(expected)
    assert (
        "Task 'sentiment': class_weights 'balanced' from the 10 train rows: neg 1.111 (3 rows), neu 3.333 (1 row), pos 0.5556 (6 rows)"
        in [r.getMessage() for r in caplog.records]
    )
    explicit = load_task_splits(config_for("labeled_lines", tmp_path, "train.txt", class_weights=[1, 2, 3]))
    assert explicit.task_spec()["class_weights"] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (
            {"class_weights": [1.0, 2.0]},
            r"class_weights has 2 weights but the task has 3 labels \['neg', 'neu', 'pos'\]",
        ),
        (
            {"class_weights": "balanced", "labels": ["neg", "neu", "pos", "other"]},
            r'class_weights="balanced": label\(s\) \[\'other\'\] have no row in the train split',
        ),
    ],
)
def test_class_weights_that_do_not_fit_the_data_are_refused_while_loading(tmp_path, options, pattern):
    write_labeled_lines(tmp_path / "train.txt", [("pos", "a"), ("neg", "b"), ("neu", "c")])
    with pytest.raises(HydraBertDataError, match=r"Task 'sentiment': " + pattern):
        load_task_splits(config_for("labeled_lines", tmp_path, "train.txt", **options))


def test_existing_data_dir_wins_over_the_hub(tmp_path, monkeypatch):
    load_dataset = datasets.load_dataset

    def local_builders_only(path, *args, **kwargs):
        # Local files go through datasets' own builders; a Hub name must never reach load_dataset.
        assert path in ("csv", "json", "parquet", "text"), "the Hub must not be used when data_dir exists"
        return load_dataset(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", local_builders_only)
    task = load_rows(tmp_path, ROWS, dataset_name="someone/sentiment")
    assert len(task.splits["train"]) == len(ROWS)


def test_hub_dataset_is_used_when_data_dir_is_absent(tmp_path, monkeypatch):
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    hub = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [1, 0]}, features=features),
            "dev": datasets.Dataset.from_dict({"sentence": ["c"], "label": [1]}, features=features),
            "unsupervised": datasets.Dataset.from_dict({"sentence": ["d"], "label": [-1]}, features=features),
        }
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or hub)
    cfg = TaskDataConfig(
        name="sst2",
        dataset_name="someone/sst2",
        dataset_config_name="default",
        data_dir=str(tmp_path / "absent"),
        text_column="sentence",
    )
    task = load_task_splits(cfg)
    assert calls == [(("someone/sst2", "default"), {"streaming": False})]
    assert task.labels == ["negative", "positive"]
    assert list(task.splits) == ["train", "validation"]
    assert task.splits["train"].to_dict() == {"text": ["a", "b"], "label": [1, 0]}

    # Streamed, the same Hub dataset is read by the same function: its splits under our names, the train split
    # a stream of encoded rows, the validation rows gathered; a bad row names the Hub split it is in.
    calls.clear()
    hub = datasets.IterableDatasetDict(
        {split: dataset.to_iterable_dataset() for split, dataset in hub.items()}
    )
    streamed = dataclasses.replace(cfg, streaming=True, labels=["negative", "positive"])
    task = load_tasks([streamed])["sst2"]
    assert calls == [(("someone/sst2", "default"), {"streaming": True})]
    assert list(task.stream) == [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    assert list(task.splits) == ["validation"] and task.splits["validation"].to_list() == [
        {"text": "c", "label": 1}
    ]
    hub["train"] = datasets.Dataset.from_dict({"sentence": ["a", ""], "label": [1, 0]}).to_iterable_dataset()
    with pytest.raises(
        HydraBertDataError,
        match=r"train split \(Hub dataset 'someone/sst2', split 'train' "
        r"\(streamed\)\): row 1: the text in column 'sentence' is empty",
    ):
        list(load_tasks([streamed])["sst2"].stream)


# ---------------------------------------------------------------------------------------------
# Errors, raised while loading, naming the task, the file and the problem
# ---------------------------------------------------------------------------------------------


def load_error(cfg) -> str:
    with pytest.raises(HydraBertDataError) as caught:
        load_task_splits(cfg)
    return str(caught.value)


def test_error_missing_file(tmp_path):
    message = load_error(config_for("labeled_lines", tmp_path, "nope.txt"))
    assert "Task 'sentiment'" in message and str(tmp_path / "nope.txt") in message
    assert "file not found" in message


def test_error_binary_file(tmp_path):
    (tmp_path / "train.txt").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(HydraBertDataError, match=r"train\.txt.*NUL bytes.*encoding"):
        load_task_splits(config_for("labeled_lines", tmp_path, "train.txt"))


def test_error_corrupt_parquet(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(HydraBertDataError, match=r"train\.parquet.*not a readable parquet file"):
        load_task_splits(config_for("parquet", tmp_path, "train.parquet"))


def test_error_wrong_encoding_suggests_the_option(tmp_path):
    write_labeled_lines(tmp_path / "train.txt", [("a", "plain"), ("b", "café")], encoding="latin-1")
    with pytest.raises(
        HydraBertDataError, match=r"cannot be decoded as 'utf-8' \(byte 0xe9 on line 2\).*`encoding`"
    ):
        load_task_splits(config_for("labeled_lines", tmp_path, "train.txt"))


def test_error_missing_column_lists_the_available_ones(tmp_path):
    write_delimited(tmp_path / "train.csv", ROWS, ",")
    cfg = config_for("csv", tmp_path, "train.csv", text_column="text")
    with pytest.raises(
        HydraBertDataError,
        match=r"column 'text' \(text_column\) not found; available "
        r"columns: \['sentence', 'polarity'\]",
    ):
        load_task_splits(cfg)


def test_error_label_outside_the_label_set(tmp_path):
    write_labeled_lines(tmp_path / "train.txt", ROWS)
    cfg = config_for("labeled_lines", tmp_path, "train.txt", labels=["neg", "pos"])
    with pytest.raises(
        HydraBertDataError,
        match=r"train\.txt\): line 4: label 'neu' is not one of the "
        r"task's labels \['neg', 'pos'\]",
    ):
        load_task_splits(cfg)


def test_error_label_outside_the_label_set_names_the_row(tmp_path):
    write_delimited(tmp_path / "train.csv", ROWS, ",")
    cfg = config_for("csv", tmp_path, "train.csv", labels=["neg", "neu"])
    with pytest.raises(HydraBertDataError, match=r"row 0: label 'pos'"):
        load_task_splits(cfg)


def test_error_empty_split(tmp_path):
    (tmp_path / "train.txt").write_text("0 fine\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n", encoding="utf-8")
    cfg = config_for("labeled_lines", tmp_path, "train.txt", test_file="test.txt")
    with pytest.raises(HydraBertDataError, match=r"test split \(file .*test\.txt\): the split is empty"):
        load_task_splits(cfg)


@pytest.mark.parametrize("line", ["1", "1 ", "1    "])
def test_error_labeled_line_without_text(tmp_path, line):
    (tmp_path / "train.txt").write_text(f"0 fine\n{line}\n", encoding="utf-8")
    with pytest.raises(HydraBertDataError, match=r"line 2 has no text after the label"):
        load_task_splits(config_for("labeled_lines", tmp_path, "train.txt"))


def test_error_empty_text_cell(tmp_path):
    write_delimited(tmp_path / "train.csv", [("pos", "fine"), ("neg", "  ")], ",")
    with pytest.raises(HydraBertDataError, match=r"row 1: the text in column 'sentence' is empty"):
        load_task_splits(config_for("csv", tmp_path, "train.csv"))


def test_error_unknown_extension_hints_at_json_lines(tmp_path):
    (tmp_path / "train.txt").write_text('{"text": "a", "label": "x"}\n', encoding="utf-8")
    cfg = TaskDataConfig(name="cite", data_dir=str(tmp_path), train_file="train.txt")
    with pytest.raises(HydraBertDataError, match=r"cannot infer the file format.*file_format='jsonl'"):
        load_task_splits(cfg)


def test_error_invalid_json_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": 1}\n{"text": \n', encoding="utf-8")
    with pytest.raises(HydraBertDataError, match=r"line 2 is not valid JSON"):
        load_task_splits(TaskDataConfig(name="t", data_dir=str(tmp_path), train_file="train.jsonl"))


def test_error_csv_row_with_wrong_field_count(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na,1\nb,0,extra\n", encoding="utf-8")
    with pytest.raises(HydraBertDataError, match=r"row 1 has 3 fields but the header has 2"):
        load_task_splits(TaskDataConfig(name="t", data_dir=str(tmp_path), train_file="train.csv"))


def test_error_regression_label_not_a_number(tmp_path):
    write_labeled_lines(tmp_path / "train.txt", [("0.5", "a"), ("high", "b")])
    cfg = config_for("labeled_lines", tmp_path, "train.txt", problem_type="regression")
    with pytest.raises(HydraBertDataError, match=r"line 2: regression label 'high' is not a number"):
        load_task_splits(cfg)


def test_error_missing_data_dir_without_hub_name(tmp_path):
    cfg = TaskDataConfig(name="t", data_dir=str(tmp_path / "absent"), train_file="train.csv")
    with pytest.raises(HydraBertDataError, match=r"data_dir .*absent' does not exist and no dataset_name"):
        load_task_splits(cfg)


def test_missing_data_dir_offline_names_the_folder_and_the_hub_dataset(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1: load_dataset answers at once (from the cache, or not at all).
    cfg = TaskDataConfig(name="sst2", dataset_name="SetFit/sst2", data_dir=str(tmp_path / "absent"))
    message = load_error(cfg)
    assert f"no local folder {tmp_path / 'absent'} (data_dir)" in message
    assert "the Hub dataset 'SetFit/sst2' cannot be loaded" in message and "--data_root" in message


def test_missing_data_dir_with_the_hub_unreachable_fails_at_once(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    # load_dataset would retry for ~25 s; one failed request must be enough.
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset was called"))
    cfg = TaskDataConfig(name="sst2", dataset_name="SetFit/sst2", data_dir=str(tmp_path / "absent"))
    message = load_error(cfg)
    assert f"no local folder {tmp_path / 'absent'} (data_dir)" in message
    assert "the Hub dataset 'SetFit/sst2' cannot be loaded (ConnectError" in message


def test_config_rejects_unknown_keys_by_name():
    with pytest.raises(
        HydraBertDataError, match=r"unknown key\(s\) 'txt_column' \(did you mean 'text_column'\?\)"
    ):
        TaskDataConfig.from_dict({"name": "t", "data_dir": "x", "txt_column": "a"})


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"problem_type": "ranking"}, "problem_type must be one of"),
        ({"file_format": "xml"}, "file_format must be one of"),
        ({"encoding": "klingon"}, "encoding 'klingon' is not a known codec"),
        ({"labels": ["a", "a"]}, "distinct names"),
        ({"label_ids": True}, "label_ids=True needs the label names"),
        ({"validation_split_percentage": 100}, "validation_split_percentage"),
        ({"data_dir": None}, "give a dataset_name"),
        ({"class_weights": "inverse"}, r"class_weights must be 'balanced' or a list of numbers"),
        ({"class_weights": [1, -2]}, r"class_weights must hold finite numbers >= 0, got -2"),
        ({"class_weights": [1, math.nan]}, r"class_weights must hold finite numbers >= 0, got nan"),
        ({"class_weights": [0, 0]}, r"class_weights are all 0"),
        (
            {"class_weights": [1, 2, 3], "labels": ["a", "b"]},
            r"class_weights has 3 weights but the task has 2 labels",
        ),
        (
            {"class_weights": "balanced", "problem_type": "regression"},
            r"class_weights is for single_label_classification tasks, not regression",
        ),
    ],
)
def test_config_validates_fields(options, pattern):
    with pytest.raises(HydraBertDataError, match=pattern):
        TaskDataConfig(**{"name": "t", "data_dir": "x", **options})


# ---------------------------------------------------------------------------------------------
# Tokenising
# ---------------------------------------------------------------------------------------------


def test_tokenize_task_columns_lengths_and_labels(tmp_path, tokenizer):
    task = load_rows(tmp_path, [("pos", "a good movie"), ("neg", "bad film , just bad")])
    tokenized = tokenize_task(task.splits, tokenizer, max_length=5)["train"]
    assert tokenized.column_names == ["input_ids", "attention_mask", "token_type_ids", "labels", "length"]
    assert tokenized["length"] == [5, 5] and tokenized[0]["input_ids"][0] == tokenizer.cls_token_id
    assert [len(ids) for ids in tokenized["input_ids"]] == tokenized["length"]
    assert tokenized.features["labels"].names == ["neg", "pos"] and tokenized["labels"] == [1, 0]


def test_tokenize_task_encodes_text_pairs(tmp_path, tokenizer):
    (tmp_path / "train.jsonl").write_text(json.dumps({"a": "good movie", "b": "bad", "label": 1}) + "\n")
    cfg = TaskDataConfig(
        name="pairs", data_dir=str(tmp_path), train_file="train.jsonl", text_column="a", text_pair_column="b"
    )
    row = tokenize_task(load_task_splits(cfg).splits, tokenizer, max_length=16)["train"][0]
    assert row["token_type_ids"] == [0, 0, 0, 0, 1, 1]


def test_tokenize_task_caches_by_fingerprint(tmp_path, tokenizer):
    task = load_rows(tmp_path, ROWS)
    cache = tmp_path / "cache"
    first = tokenize_task(task.splits, tokenizer, max_length=8, cache_dir=str(cache))["train"]
    files = sorted(os.listdir(cache))
    assert len(files) == 1 and first.cache_files[0]["filename"] == str(cache / files[0])
    # A fresh load of the same file: same cache file.
    reloaded = load_task_splits(config_for("labeled_lines", tmp_path, "train.txt"))
    again = tokenize_task(reloaded.splits, tokenizer, max_length=8, cache_dir=str(cache))["train"]
    assert sorted(os.listdir(cache)) == files and again.to_dict() == first.to_dict()
    tokenize_task(task.splits, tokenizer, max_length=4, cache_dir=str(cache))
    assert len(os.listdir(cache)) == 2  # another max_length, another cache file


# ---------------------------------------------------------------------------------------------
# Task sampling
# ---------------------------------------------------------------------------------------------


def lengths_for(sizes, seed=0):
    rng = random.Random(seed)
    return {name: [rng.randint(3, 60) for _ in range(size)] for name, size in sizes.items()}


def task_of(sampler, batch):
    """The task of a one-task batch (asserting that it is one task)."""
    names = {
        name
        for name in sampler.task_names
        for i in batch
        if sampler.task_offsets[name] <= i < sampler.task_offsets[name] + len(sampler.lengths[name])
    }
    assert len(names) == 1, f"batch {batch} mixes tasks {names}"
    return names.pop()


def test_proportional_uses_every_example_once(tokenizer):
    sampler = MultiTaskBatchSampler(lengths_for({"a": 10, "b": 25, "c": 3}), batch_size=4, seed=3)
    batches = list(sampler)
    assert sampler.task_offsets == {"a": 0, "b": 10, "c": 35}
    assert len(batches) == len(sampler) == 3 + 7 + 1
    assert Counter(task_of(sampler, b) for b in batches) == {"a": 3, "b": 7, "c": 1}
    assert sorted(i for b in batches for i in b) == list(range(38))
    assert sampler.task_probabilities() == pytest.approx({"a": 3 / 11, "b": 7 / 11, "c": 1 / 11})


def test_proportional_interleaves_tasks():
    sampler = MultiTaskBatchSampler(lengths_for({"a": 40, "b": 40}), batch_size=4, seed=0)
    order = [task_of(sampler, b) for b in sampler]
    assert order != sorted(order)  # shuffled, not task after task


def test_round_robin_cycles_until_the_smallest_task_runs_out():
    sampler = MultiTaskBatchSampler(
        lengths_for({"a": 12, "b": 20, "c": 8}), batch_size=4, strategy="round_robin"
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 * 2
    assert [task_of(sampler, b) for b in batches] == ["a", "b", "c"] * 2
    assert len({i for b in batches for i in b}) == sum(len(b) for b in batches)  # no repeats


@pytest.mark.parametrize(
    ("strategy", "temperature", "expected_a"),
    [
        ("uniform", 1.0, 0.5),
        ("temperature", 2.0, math.sqrt(40) / (math.sqrt(40) + math.sqrt(10))),
        ("temperature", 1.0, 0.8),  # T=1 is proportional
    ],
)
def test_sampled_strategies_match_their_probabilities(strategy, temperature, expected_a):
    sampler = MultiTaskBatchSampler(
        lengths_for({"a": 80, "b": 20}), batch_size=2, strategy=strategy, temperature=temperature, seed=11
    )
    assert sampler.task_probabilities()["a"] == pytest.approx(expected_a)
    counts = Counter()
    for epoch in range(100):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 50  # an epoch is as long as a proportional one
        counts.update(task_of(sampler, b) for b in batches)
    assert counts["a"] / sum(counts.values()) == pytest.approx(expected_a, abs=0.03)


def test_sampled_strategy_reshuffles_an_exhausted_task():
    sampler = MultiTaskBatchSampler(lengths_for({"a": 40, "b": 4}), batch_size=2, strategy="uniform", seed=1)
    b_batches = [tuple(sorted(b)) for b in sampler if task_of(sampler, b) == "b"]
    assert len(b_batches) > 2  # task b has 2 batches but is drawn about half the time
    assert set(i for b in b_batches for i in b) == {40, 41, 42, 43}


def test_set_epoch_is_deterministic():
    lengths = lengths_for({"a": 30, "b": 17})
    for strategy in ("proportional", "round_robin", "uniform", "temperature"):
        one = MultiTaskBatchSampler(lengths, batch_size=4, strategy=strategy, temperature=3.0, seed=5)
        two = MultiTaskBatchSampler(lengths, batch_size=4, strategy=strategy, temperature=3.0, seed=5)
        epoch0 = list(one)
        one.set_epoch(1)
        two.set_epoch(1)
        assert list(one) == list(two) != epoch0
        one.set_epoch(0)
        assert list(one) == epoch0
        assert list(MultiTaskBatchSampler(lengths, batch_size=4, strategy=strategy, seed=6)) != epoch0


def padded_tokens(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_length_grouping_reduces_padding():
    lengths = lengths_for({"a": 200, "b": 120}, seed=2)
    flat = lengths["a"] + lengths["b"]
    grouped = MultiTaskBatchSampler(lengths, batch_size=8, seed=0)
    plain = MultiTaskBatchSampler(lengths, batch_size=8, seed=0, group_by_length=False)
    assert sorted(i for b in grouped for i in b) == list(range(320))
    assert padded_tokens(list(grouped), flat) < 0.5 * padded_tokens(list(plain), flat)


def test_mixed_batches_mix_tasks_and_cover_every_example():
    sampler = MultiTaskBatchSampler(
        lengths_for({"a": 30, "b": 30}), batch_size=6, mixed=True, group_by_length=False
    )
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10
    assert sorted(i for b in batches for i in b) == list(range(60))
    assert any(min(b) < 30 <= max(b) for b in batches)


def test_drop_last_keeps_full_batches_only():
    sampler = MultiTaskBatchSampler(lengths_for({"a": 10, "b": 7}), batch_size=4, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 + 1 and all(len(b) == 4 for b in batches)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"strategy": "random"}, "strategy must be one of"),
        ({"strategy": "uniform", "mixed": True}, "mixed batches support strategy='proportional' only"),
        ({"batch_size": 0}, "batch_size"),
        ({"strategy": "temperature", "temperature": 0.0}, "temperature must be > 0"),
        (
            {"batch_size": 20, "drop_last": True},
            "task 'b' has 7 examples: not one batch of 20 with drop_last",
        ),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        MultiTaskBatchSampler(lengths_for({"a": 30, "b": 7}), **{"batch_size": 4, **kwargs})


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4),
    batch_size=st.integers(1, 8),
    strategy=st.sampled_from(["proportional", "round_robin", "uniform", "temperature"]),
    drop_last=st.booleans(),
    group_by_length=st.booleans(),
    mixed=st.booleans(),
    seed=st.integers(0, 1000),
    epoch=st.integers(0, 5),
)
def test_sampler_invariants(sizes, batch_size, strategy, drop_last, group_by_length, mixed, seed, epoch):
    if drop_last and min(sizes) < batch_size:
        drop_last = False
    if mixed:
        strategy = "proportional"
    lengths = lengths_for({f"t{i}": size for i, size in enumerate(sizes)}, seed=seed)
    kwargs = dict(
        batch_size=batch_size,
        strategy=strategy,
        temperature=2.0,
        seed=seed,
        drop_last=drop_last,
        group_by_length=group_by_length,
        mixed=mixed,
    )
    sampler = MultiTaskBatchSampler(lengths, **kwargs)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert batches == list(sampler)  # iterating again gives the same epoch
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert all(0 <= i < sum(sizes) for b in batches for i in b)
    if drop_last:
        assert all(len(b) == batch_size for b in batches)
    if not mixed:
        for batch in batches:
            task_of(sampler, batch)
    if strategy == "proportional" or strategy == "round_robin":
        flat = [i for b in batches for i in b]
        assert len(flat) == len(set(flat))  # nothing twice in an epoch
        if strategy == "proportional" and not drop_last:
            assert sorted(flat) == list(range(sum(sizes)))


# ---------------------------------------------------------------------------------------------
# Collation and the DataLoader
# ---------------------------------------------------------------------------------------------


def test_collator_pads_and_adds_task_ids(tokenizer):
    features = [
        {
            "input_ids": [2, 5, 6, 3],
            "attention_mask": [1, 1, 1, 1],
            "token_type_ids": [0, 0, 0, 0],
            "labels": 1,
            "length": 4,
            "task_id": 2,
        },
        {
            "input_ids": [2, 7, 3],
            "attention_mask": [1, 1, 1],
            "token_type_ids": [0, 0, 0],
            "labels": 0,
            "length": 3,
            "task_id": 0,
        },
    ]
    batch = MultiTaskCollator(tokenizer)(features)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "task_ids"}
    assert batch["input_ids"].tolist() == [[2, 5, 6, 3], [2, 7, 3, tokenizer.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    assert batch["task_ids"].dtype == torch.long and batch["task_ids"].tolist() == [2, 0]
    padded = MultiTaskCollator(tokenizer, pad_to_multiple_of=8)(features)
    assert padded["input_ids"].shape == (2, 8)


@pytest.mark.parametrize(
    ("labels", "dtype", "shape"),
    [
        ([0.5, 2.0], torch.float32, (2,)),  # regression
        ([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], torch.float32, (2, 3)),  # multi-label
        ([1, 0.5], torch.float32, (2,)),  # a mixed batch of a class id and a score
    ],
)
def test_collator_label_dtypes(tokenizer, labels, dtype, shape):
    features = [{"input_ids": [2, 3], "labels": label, "task_id": 0} for label in labels]
    batch = MultiTaskCollator(tokenizer)(features)
    assert batch["labels"].dtype == dtype and tuple(batch["labels"].shape) == shape


def test_collator_rejects_multi_label_rows_mixed_with_scalars(tokenizer):
    features = [{"input_ids": [2, 3], "labels": [1.0, 0.0]}, {"input_ids": [2, 3], "labels": 1}]
    with pytest.raises(ValueError, match="one task per batch"):
        MultiTaskCollator(tokenizer)(features)


def test_dataloader_end_to_end(tmp_path, tokenizer):
    (tmp_path / "sst").mkdir()
    (tmp_path / "trec").mkdir()
    write_labeled_lines(
        tmp_path / "sst" / "train.txt", [(str(i % 2), "good movie " * (i % 5 + 1)) for i in range(9)]
    )
    write_labeled_lines(
        tmp_path / "trec" / "train.txt", [("DESC:def", "what is a"), ("HUM:ind", "who did")] * 3
    )
    tokenized = {}
    for name, extra in (("sst", {}), ("trec", {"label_transform": "coarse"})):
        cfg = TaskDataConfig(
            name=name,
            data_dir=str(tmp_path / name),
            train_file="train.txt",
            file_format="labeled_lines",
            **extra,
        )
        tokenized[name] = tokenize_task(load_task_splits(cfg).splits, tokenizer, max_length=32)["train"]
    dataset, offsets = build_multitask_dataset(tokenized, task_names=["trec", "sst"])  # the model's order
    assert offsets == {"sst": 0, "trec": 9} and len(dataset) == 15
    assert dataset[10]["task_id"] == 0 and dataset[0]["task_id"] == 1
    sampler = MultiTaskBatchSampler(dataset.task_lengths(), batch_size=4, seed=1)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=MultiTaskCollator(tokenizer))
    batches = list(loader)
    assert len(batches) == len(sampler) == 3 + 2
    assert sum(len(b["labels"]) for b in batches) == 15
    for batch in batches:
        assert batch["task_ids"].unique().numel() == 1 and batch["labels"].dtype == torch.long
        assert batch["input_ids"].shape == batch["attention_mask"].shape


# ---------------------------------------------------------------------------------------------
# Property: the labeled_lines reader round-trips what was written
# ---------------------------------------------------------------------------------------------

LABELS = st.text(alphabet="abcXYZ019_-:", min_size=1, max_size=6)
# Text: no control characters (so no \r or \n), no surrounding whitespace, not empty.
TEXTS = (
    st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(LABELS, TEXTS), min_size=1, max_size=8), separator=st.sampled_from([" ", "\t"])
)
def test_labeled_lines_round_trip(rows, separator):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "train.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(f"{label}{separator}{text}\n" for label, text in rows)
        cfg = TaskDataConfig(
            name="t",
            data_dir=directory,
            train_file="train.txt",
            file_format="labeled_lines",
            label_separator=separator,
        )
        task = load_task_splits(cfg)
    split = task.splits["train"]
    assert split["text"] == [text for _, text in rows]
    assert [task.labels[i] for i in split["label"]] == [label for label, _ in rows]


# ---------------------------------------------------------------------------------------------
# The real data sets (skipped by default)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="../shared/data is not here")
def test_real_sst2_and_trec_load_with_their_documented_counts():
    sst2 = load_task_splits(
        TaskDataConfig(
            name="sst2",
            data_dir=os.path.join(SHARED_DATA, "sst2"),
            file_format="labeled_lines",
            train_file="stsa.binary.train",
            validation_file="stsa.binary.dev",
            test_file="stsa.binary.test",
            labels=["negative", "positive"],
            label_ids=True,
        )
    )
    assert {k: len(v) for k, v in sst2.splits.items()} == {"train": 6920, "validation": 872, "test": 1821}
    trec = load_task_splits(
        TaskDataConfig(
            name="trec",
            data_dir=os.path.join(SHARED_DATA, "trec", "raw"),
            file_format="labeled_lines",
            train_file="TREC.train",
            test_file="TREC.test",
            encoding="latin-1",
            label_transform="coarse",
        )
    )
    assert trec.labels == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    counts = Counter(trec.labels[i] for i in trec.splits["test"]["label"])
    assert counts == {"DESC": 138, "ENTY": 94, "ABBR": 9, "HUM": 65, "LOC": 81, "NUM": 113}
