"""Reliability and safety: bad input fails early with one clear message (and no half-written output
directory), config and readers hold under random input, the files that travel to the Hub are inert,
and inference streams.

Every expected message here is also a row of docs/reliability.md. With HYDRABERT_RECORD_MESSAGES=path
the tests append each (case, message) they see to that file as JSON lines, which is how the table's
messages were copied from real runs.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import TINY_WORDS, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

import hydrabert
from hydrabert import HydraBertConfig, HydraBertModel
from hydrabert.data import HydraBertDataError, TaskDataConfig, load_task_splits
from hydrabert.trainer import MultiTaskTrainer, MultiTaskTrainingArguments

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import run_mtl  # noqa: E402

PACKAGE = os.path.dirname(hydrabert.__file__)


def expect(case: str, error: type[BaseException], pattern: str, action) -> str:
    """Runs `action`, which must raise `error` with a message matching `pattern`; records the message."""
    with pytest.raises(error) as caught:
        action()
    message = str(caught.value)
    assert re.search(pattern, message), f"{case}: {message!r} does not match {pattern!r}"
    record = os.environ.get("HYDRABERT_RECORD_MESSAGES")
    if record:
        with open(record, "a", encoding="utf-8") as handle:
            handle.write(
                json.dumps({"case": case, "error": type(caught.value).__name__, "message": message}) + "\n"
            )
    return message


# ------------------------------------------------------------------------------------- data files
def _parquet_bytes() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["a good film"] * 50, "label": ["pos"] * 50}), sink)
    return sink.getvalue()


# case -> (file name, content, TaskDataConfig options, message pattern)
DATA_CASES = {
    "empty file": ("train.csv", b"", {}, r"train\.csv\): the split is empty"),
    "header only": ("train.csv", b"text,label\n", {}, r"the split is empty"),
    "blank lines only": ("train.jsonl", b"\n\n", {}, r"the split is empty"),
    "empty parquet": ("train.parquet", b"", {}, r"not a readable parquet file .*0 bytes"),
    "truncated json": (
        "train.json",
        b'[{"text": "a good film", "label": "pos"}, {"text": "bad", "lab',
        {},
        r"is not valid JSON \(Unterminated string",
    ),
    "truncated jsonl": (
        "train.jsonl",
        b'{"text": "a good film", "label": "pos"}\n{"text": "bad", "lab',
        {},
        r"line 2 is not valid JSON",
    ),
    "truncated csv (open quote)": (
        "train.csv",
        b'text,label\n"a good film,pos\n',
        {},
        r"row 0 has 1 fields but the header has 2 \(an unclosed quote\?\)",
    ),
    "truncated csv (short row)": (
        "train.csv",
        b"text,label\na good film,pos\nbad",
        {},
        r"row 1: label '' is missing",
    ),
    "truncated parquet": ("train.parquet", None, {}, r"not a readable parquet file .*magic bytes"),
    "truncated utf-8": (
        "train.txt",
        "pos fine\nneg café"[:-1].encode() + "é".encode()[:1],
        {"file_format": "labeled_lines"},
        r"cannot be decoded as 'utf-8' \(byte 0xc3 on line 2\); set the task's `encoding`",
    ),
    "binary file": (
        "train.txt",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        {"file_format": "labeled_lines"},
        r"contains NUL bytes: not a text file in encoding 'utf-8' \(a binary file\?",
    ),
    "gzip-compressed csv": ("train.csv", gzip.compress(b"text,label\na,pos\n"), {}, r"contains NUL bytes"),
    "latin-1 read as utf-8": (
        "train.csv",
        "text,label\ncafé,pos\n".encode("latin-1"),
        {},
        r"cannot be decoded as 'utf-8' \(byte 0xe9 on line 2\)",
    ),
    "utf-16 without encoding": (
        "train.csv",
        "text,label\na,pos\n".encode("utf-16"),
        {},
        r"NUL bytes.*UTF-16\?",
    ),
    "misnamed text column": (
        "train.csv",
        b"sentence,label\na good film,pos\n",
        {},
        r"column 'text' \(text_column\) not found; available columns: \['sentence', 'label'\]",
    ),
    "misnamed label column": (
        "train.csv",
        b"text,polarity\na good film,pos\n",
        {},
        r"column 'label' \(label_column\) not found; available columns: \['text', 'polarity'\]",
    ),
    "missing text cell": (
        "train.jsonl",
        b'{"text": "a good film", "label": "pos"}\n{"label": "neg"}\n',
        {},
        r"row 1: the text in column 'text' is missing",
    ),
    "lone surrogate escaped in JSON": (
        "train.jsonl",
        b'{"text": "bad \\ud800 film", "label": "pos"}\n',
        {},
        r"is not a readable json file \(ArrowInvalid: .*surrogate pair in string is invalid\. in row 0\)",
    ),
    "unknown label name": (
        "train.csv",
        b"text,label\na,pos\nb,neu\n",
        {"labels": ["neg", "pos"]},
        r"row 1: label 'neu' is not one of the task's labels \['neg', 'pos'\]",
    ),
    "label id out of range": (
        "train.csv",
        b"text,label\na,0\nb,7\n",
        {"labels": ["neg", "pos"], "label_ids": True},
        r"row 1: label id 7 is outside the task's labels \['neg', 'pos'\]",
    ),
    "regression label not a number": (
        "train.csv",
        b"text,label\na,0.5\nb,high\n",
        {"problem_type": "regression"},
        r"row 1: regression label 'high' is not a number",
    ),
    "missing file": ("absent.csv", None, {}, r"absent\.csv\): file not found"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file_names_task_file_and_problem(case, tmp_path):
    name, content, options, pattern = DATA_CASES[case]
    if case == "truncated parquet":
        content = _parquet_bytes()[:300]
    if content is not None:
        (tmp_path / name).write_bytes(content)
    cfg = TaskDataConfig(name="sentiment", data_dir=str(tmp_path), train_file=name, **options)
    message = expect(f"data: {case}", HydraBertDataError, pattern, lambda: load_task_splits(cfg))
    assert message.startswith("Task 'sentiment', train split (file ") and str(tmp_path / name) in message


def test_utf16_file_loads_when_its_encoding_is_given(tmp_path):
    (tmp_path / "train.csv").write_bytes("text,label\na good film,pos\nbad,neg\n".encode("utf-16"))
    task = load_task_splits(
        TaskDataConfig(name="t", data_dir=str(tmp_path), train_file="train.csv", encoding="utf-16")
    )
    assert task.splits["train"]["text"] == ["a good film", "bad"]


def test_missing_data_folder_names_the_folder_and_the_hub_dataset(tmp_path):
    """A wrong data_root: the task's folder is not there and the Hub is offline (as in these tests);
    no retries, and the message names both places looked in."""
    cfg = TaskDataConfig(name="sentiment", dataset_name="SetFit/sst2", data_dir=str(tmp_path / "sst2"))
    expect(
        "data: data_dir missing and the Hub offline",
        HydraBertDataError,
        r"no local folder .*sst2 \(data_dir\), and the Hub dataset 'SetFit/sst2' cannot be loaded .*--data_root",
        lambda: load_task_splits(cfg),
    )


# ----------------------------------------------------------------------------- tasks and labels
def test_unknown_task_names_in_config_forward_and_predict(tiny_model, tiny_tokenizer):
    expect(
        "config: task name that is not an identifier",
        ValueError,
        r"tasks: task name 'sentiment analysis' must be a valid Python identifier",
        lambda: tiny_config(tasks={"sentiment analysis": {"num_labels": 2}}),
    )
    batch = tiny_tokenizer(["a good film"], return_tensors="pt")
    known = r"Unknown task 'sport'; known tasks: \['sentiment', 'topic'\]"
    expect("forward(task='sport')", ValueError, known, lambda: tiny_model(**batch, task="sport"))
    expect(
        "predict(tasks=['sport'])",
        ValueError,
        known,
        lambda: tiny_model.predict(["a"], tiny_tokenizer, ["sport"]),
    )


def test_labels_outside_a_tasks_range_raise_before_the_loss(tiny_model, tiny_tokenizer):
    batch = tiny_tokenizer(["a good film", "bad"], padding=True, return_tensors="pt")
    expect(
        "forward: label 2 for a 2-label task",
        ValueError,
        r"Task 'sentiment': labels must be in \[0, 2\) \(labels \['negative', 'positive'\]\), got \[2\]",
        lambda: tiny_model(**batch, task="sentiment", labels=torch.tensor([0, 2])),
    )


def test_class_weights_that_cannot_apply_are_refused_before_training(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\na good film,pos\nbad,neg\nfine,pos\n")
    options = {"name": "sentiment", "data_dir": str(tmp_path), "train_file": "train.csv"}
    expect(
        "class_weights on a regression task",
        HydraBertDataError,
        r"Task 'sentiment': class_weights is for single_label_classification tasks, not regression",
        lambda: TaskDataConfig(**options, problem_type="regression", class_weights="balanced"),
    )
    expect(
        "class_weights: one weight for inferred labels ['neg', 'pos']",
        HydraBertDataError,
        r"Task 'sentiment': class_weights has 1 weights but the task has 2 labels \['neg', 'pos'\]",
        lambda: load_task_splits(TaskDataConfig(**options, class_weights=[2.0])),
    )
    expect(
        "class_weights='balanced' with a label that has no train row",
        HydraBertDataError,
        r"Task 'sentiment': class_weights=\"balanced\": label\(s\) \['neu'\] have no row in the train split",
        lambda: load_task_splits(
            TaskDataConfig(**options, labels=["neg", "neu", "pos"], class_weights="balanced")
        ),
    )


# ------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("case", "settings", "pattern"),
    [
        (
            "layerwise_lr_decay=0",
            {"layerwise_lr_decay": 0.0},
            r"layerwise_lr_decay must be in \(0, 1\], got 0\.0",
        ),
        (
            "layerwise_lr_decay=1.5",
            {"layerwise_lr_decay": 1.5},
            r"layerwise_lr_decay must be in \(0, 1\], got 1\.5",
        ),
        (
            "layerwise_lr_decay=nan",
            {"layerwise_lr_decay": math.nan},
            r"layerwise_lr_decay must be in \(0, 1\]",
        ),
        (
            "gradual_unfreezing with freeze_policy='all'",
            {"gradual_unfreezing": True, "freeze_policy": "all"},
            r"gradual_unfreezing unfreezes encoder layers, but freeze_policy='all' keeps the encoder frozen",
        ),
        ("task_weights not JSON", {"task_weights": "{sport: 2"}, r"task_weights must be a JSON object"),
    ],
)
def test_invalid_arguments_fail_when_parsed(case, settings, pattern):
    expect(
        f"arguments: {case}",
        ValueError,
        pattern,
        lambda: MultiTaskTrainingArguments(output_dir="unused", report_to=[], **settings),
    )


def test_argument_problems_that_need_the_model_fail_before_the_trainer_exists(tmp_path, tiny_tokenizer):
    from conftest import make_task_datasets, tiny_training_args

    train, _ = make_task_datasets(tiny_tokenizer, sizes={"sentiment": (8, 2), "topic": (8, 3)})
    out = tmp_path / "out"

    def trainer(**settings):
        return lambda: MultiTaskTrainer(
            model=HydraBertModel(tiny_config()),
            args=tiny_training_args(out, **settings),
            train_dataset=train,
            processing_class=tiny_tokenizer,
        )

    expect(
        "frozen_tasks=['sport']",
        ValueError,
        r"frozen_tasks: unknown task\(s\) \['sport'\]; known tasks: \['sentiment', 'topic'\]",
        trainer(frozen_tasks=["sport"]),
    )
    expect(
        "gradual_unfreezing with every encoder layer frozen (freeze_lower_layers=2 of 2)",
        ValueError,
        r"gradual_unfreezing has nothing to unfreeze: the freeze settings keep all 2 encoder layers frozen",
        trainer(gradual_unfreezing=True, freeze_lower_layers=2),
    )
    expect(
        "freeze_lower_layers=5 on a 2-layer encoder",
        ValueError,
        r"freeze_lower_layers must be in \[0, 2\] for this encoder, got 5",
        trainer(freeze_lower_layers=5),
    )
    assert not out.exists()


# ----------------------------------------------------------------------------------- checkpoints
@pytest.fixture
def saved_model(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "model"
    HydraBertModel(tiny_config()).save_pretrained(folder)
    return folder


def _edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config["tasks"])
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("case", "edit", "pattern"),
    [
        (
            "config.json gives 'topic' 5 labels, the weights 3",
            lambda tasks: tasks["topic"].update(num_labels=5, labels=list("abcde")),
            r"heads\.topic\.bias has shape \(3,\) in the weights but \(5,\) from config\.json",
        ),
        (
            "config.json declares a task the weights lack",
            lambda tasks: tasks.update(extra={"num_labels": 2}),
            r"config\.json declares \['heads\.extra\.bias', 'heads\.extra\.weight'\], which the weights lack",
        ),
        (
            "the weights hold a head config.json lacks",
            lambda tasks: tasks.pop("topic"),
            r"the weights hold \['heads\.topic\.bias', 'heads\.topic\.weight'\], which config\.json does not declare",
        ),
    ],
)
def test_checkpoint_whose_heads_disagree_with_its_config_is_refused(case, edit, pattern, saved_model):
    _edit_config(saved_model, edit)
    model_args = run_mtl.ModelArguments(model_name_or_path=str(saved_model))
    expect(
        f"checkpoint: {case}",
        ValueError,
        r"Checkpoint .*model: its weights disagree with the tasks in its config\.json: " + pattern,
        lambda: run_mtl.build_model(model_args, {}),
    )


def test_data_labels_that_disagree_with_a_checkpoint_head_are_refused(saved_model):
    specs = {
        "topic": {
            "num_labels": 2,
            "labels": ["a", "b"],
            "problem_type": "single_label_classification",
            "weight": 1.0,
        }
    }
    expect(
        "checkpoint: the data's labels disagree with a head",
        ValueError,
        r"Task 'topic': the data's labels \['a', 'b'\] .* disagree with the checkpoint's head "
        r"\['LABEL_0', 'LABEL_1', 'LABEL_2'\].*rename the task",
        lambda: run_mtl.build_model(run_mtl.ModelArguments(model_name_or_path=str(saved_model)), specs),
    )


@pytest.mark.parametrize(
    ("case", "damage", "error", "pattern"),
    [
        (
            "model.safetensors missing",
            lambda f: (f / "model.safetensors").unlink(),
            OSError,
            r"no file named model\.safetensors found in directory .*model",
        ),
        (
            "model.safetensors truncated",
            lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:5000]),
            OSError,
            r"Cannot load .*model: .*model/model\.safetensors is corrupt or truncated \(Error while deserializing "
            r"header: incomplete metadata, file not fully covered\)",
        ),
        (
            "model.safetensors overwritten with zeros",
            lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 4096),
            OSError,
            r"model/model\.safetensors is corrupt or truncated \(Error while deserializing header: invalid JSON",
        ),
        (
            "model.safetensors empty",
            lambda f: (f / "model.safetensors").write_bytes(b""),
            OSError,
            r"model/model\.safetensors is corrupt or truncated \(Error while deserializing header: header too small",
        ),
        (
            "pickled pytorch_model.bin only",
            lambda f: (
                torch.save(HydraBertModel.from_pretrained(f).state_dict(), f / "pytorch_model.bin"),
                (f / "model.safetensors").unlink(),
            ),
            OSError,
            r"model holds only pickled weights \(pytorch_model\.bin\), and unpickling can run code: "
            r"hydrabert loads safetensors only",
        ),
    ],
)
def test_missing_or_corrupt_weights_give_one_message_naming_the_file(
    case, damage, error, pattern, saved_model
):
    damage(saved_model)
    expect(f"weights: {case}", error, pattern, lambda: HydraBertModel.from_pretrained(saved_model))


# ------------------------------------------------------------------------- run_mtl, end to end
@pytest.fixture(scope="module")
def encoder_dir(tiny_encoder_dir):
    return Path(tiny_encoder_dir)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    lines = [f"{'pos' if i % 2 else 'neg'} {' '.join(TINY_WORDS[i % 7 : i % 7 + 3])}" for i in range(16)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    return folder


def _run(tmp_path, encoder_dir, data_dir, *flags, model=None, **settings):
    task = {
        "name": "sentiment",
        "data_dir": str(data_dir),
        "train_file": "train.txt",
        "file_format": "labeled_lines",
    }
    config = {
        "model_name_or_path": str(model or encoder_dir),
        "tokenizer_name": str(encoder_dir),
        "tasks": [task],
        "output_dir": str(tmp_path / "out"),
        "do_train": True,
        "max_steps": 1,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        **settings,
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    return lambda: run_mtl.main([str(path), *flags])


RUN_CASES = {
    "--frozen_tasks sport": (
        ["--frozen_tasks", "sport"],
        {},
        ValueError,
        r"frozen_tasks: unknown task\(s\) \['sport'\]; known tasks: \['sentiment'\]",
    ),
    "--task_weights '{\"sport\": 2}'": (
        ["--task_weights", '{"sport": 2}'],
        {},
        ValueError,
        r"task_weights: unknown task\(s\) \['sport'\]; the model's tasks are \['sentiment'\]",
    ),
    "task named 'sentiment analysis' in the JSON config": (
        [],
        {"tasks": "rename"},
        HydraBertDataError,
        r"Task 'sentiment analysis': name must be a valid Python identifier",
    ),
    "--freeze_policy all with do_train": (
        ["--freeze_policy", "all"],
        {},
        ValueError,
        r"Nothing would train: the freeze settings \(freeze_policy='all'",
    ),
    "--layerwise_lr_decay 1.5": (
        ["--layerwise_lr_decay", "1.5"],
        {},
        ValueError,
        r"layerwise_lr_decay must be in \(0, 1\]",
    ),
    "--resume_from_checkpoint of an interrupted save": (
        ["--resume_from_checkpoint", "INCOMPLETE"],
        {},
        ValueError,
        r"Cannot resume from .*checkpoint-4: no trainer_state\.json \(written last: the run stopped while saving",
    ),
    "model_name_or_path: a checkpoint with a truncated model.safetensors": (
        [],
        {"model": "truncated"},
        OSError,
        r"model\.safetensors is corrupt or truncated",
    ),
    "model_name_or_path: a checkpoint whose heads disagree with config.json": (
        [],
        {"model": "mismatched"},
        ValueError,
        r"its weights disagree with the tasks in its config\.json",
    ),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_mtl_fails_before_writing_anything(case, tmp_path, encoder_dir, data_dir, saved_model):
    flags, settings, error, pattern = RUN_CASES[case]
    if settings.get("tasks") == "rename":
        data = {"name": "sentiment analysis", "data_dir": str(data_dir), "train_file": "train.txt"}
        settings = {"tasks": [{**data, "file_format": "labeled_lines"}]}
    if settings.get("model") == "truncated":
        weights = saved_model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:5000])
        settings = {"model": saved_model}
    elif settings.get("model") == "mismatched":
        _edit_config(
            saved_model, lambda tasks: tasks["sentiment"].update(num_labels=3, labels=["a", "b", "c"])
        )
        settings = {"model": saved_model}
    if "INCOMPLETE" in flags:
        incomplete = tmp_path / "old" / "checkpoint-4"
        incomplete.mkdir(parents=True)
        shutil.copy(saved_model / "model.safetensors", incomplete / "model.safetensors")
        flags = [str(incomplete) if flag == "INCOMPLETE" else flag for flag in flags]
    expect(f"run_mtl: {case}", error, pattern, _run(tmp_path, encoder_dir, data_dir, *flags, **settings))
    assert not (tmp_path / "out").exists(), (
        "a run that fails on its input must not create its output directory"
    )


# ----------------------------------------------------------------------- property-based: config
IDENTIFIERS = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
LABEL_NAMES = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=6)


@st.composite
def valid_task(draw):
    problem_type = draw(
        st.sampled_from(["single_label_classification", "multi_label_classification", "regression"])
    )
    spec = {"problem_type": problem_type}
    if problem_type != "regression" and draw(st.booleans()):
        low = 2 if problem_type == "single_label_classification" else 1
        spec["labels"] = draw(st.lists(LABEL_NAMES, min_size=low, max_size=6, unique=True))
        if draw(st.booleans()):
            spec["num_labels"] = len(spec["labels"])
    elif problem_type != "regression" or draw(st.booleans()):
        spec["num_labels"] = draw(st.integers(2 if problem_type == "single_label_classification" else 1, 8))
    if draw(st.booleans()):
        spec["weight"] = draw(st.floats(0, 10, allow_nan=False))
    if problem_type == "single_label_classification" and draw(st.booleans()):
        size = len(spec["labels"]) if "labels" in spec else spec["num_labels"]
        weights = st.lists(st.floats(0, 10, allow_nan=False), min_size=size, max_size=size)
        spec["class_weights"] = draw(weights.filter(any))
    if problem_type == "single_label_classification" and draw(st.booleans()):
        del spec["problem_type"]  # the default
    return spec


# One defect each, and the field the message must name.
DEFECTS = {
    "num_labels": [
        {"num_labels": 0},
        {"num_labels": -3},
        {"num_labels": "3"},
        {"num_labels": True},
        {"num_labels": 2.5},
    ],
    "labels": [{"labels": ["a", "a"]}, {"labels": ["a", "b"], "num_labels": 3}],
    "problem_type": [{"problem_type": "ranking"}],
    "weight": [
        {"weight": -1.0},
        {"weight": math.nan},
        {"weight": math.inf},
        {"weight": "1"},
        {"weight": True},
    ],
    "class_weights": [
        {"class_weights": [1.0]},
        {"class_weights": [1.0, -1.0]},
        {"class_weights": [math.nan, 1.0]},
        {"class_weights": [True, 1.0]},
        {"class_weights": [0.0, 0.0]},
        {"class_weights": "balanced"},
    ],
    "unknown keys": [{"num_label": 2, "num_labels": 2}],
    "single-label classification needs at least 2 labels": [{"num_labels": 1}],
}


@settings(max_examples=40, deadline=None)
@given(tasks=st.dictionaries(IDENTIFIERS, valid_task(), max_size=4))
def test_property_valid_task_dicts_construct_and_round_trip(tasks):
    config = tiny_config(tasks=tasks)
    assert list(config.tasks) == sorted(tasks)
    for name, spec in config.tasks.items():
        assert spec["num_labels"] == len(spec["labels"]) or spec["problem_type"] == "regression"
        assert spec["problem_type"] == tasks[name].get("problem_type", "single_label_classification")
    with tempfile.TemporaryDirectory() as folder:
        config.save_pretrained(folder)
        loaded = HydraBertConfig.from_pretrained(folder)
    assert loaded.tasks == config.tasks
    assert loaded.to_dict() == config.to_dict()


@settings(max_examples=40, deadline=None)
@given(
    tasks=st.dictionaries(IDENTIFIERS, valid_task(), max_size=3),
    name=IDENTIFIERS,
    field_and_defect=st.sampled_from(
        [(field, defect) for field, defects in DEFECTS.items() for defect in defects]
    ),
)
def test_property_one_bad_task_field_raises_naming_it(tasks, name, field_and_defect):
    field, defect = field_and_defect
    sized = {"num_labels", "labels"} & set(defect)
    spec = {"problem_type": "single_label_classification", **({} if sized else {"num_labels": 2}), **defect}
    tasks = {**tasks, name: spec}
    with pytest.raises(ValueError) as caught:
        tiny_config(tasks=tasks)
    message = str(caught.value)
    assert f"tasks[{name!r}]" in message and field in message, message


@settings(max_examples=30, deadline=None)
@given(
    name=st.one_of(
        st.just(""),
        st.from_regex(r"[0-9][a-z]{0,5}", fullmatch=True),
        st.from_regex(r"[a-z]{1,4}[ \-.][a-z]{1,4}", fullmatch=True),
        st.integers(),
    )
)
def test_property_task_names_that_are_not_identifiers_raise(name):
    with pytest.raises(ValueError, match=r"tasks: task name .* must be a valid Python identifier"):
        tiny_config(tasks={name: {"num_labels": 2}})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("embedding_dim", 0),
        ("embedding_dim", 2.5),
        ("pooling", "max"),
        ("embedding_activation", "relu"),
        ("classifier_dropout", 1.0),
        ("classifier_dropout", -0.1),
        ("adapter_size", 0),
    ],
)
def test_invalid_config_fields_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        tiny_config(**{field: value})


# ------------------------------------------------------------------ property-based: data readers
@settings(max_examples=60, deadline=None)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8")),
        st.sampled_from([b'{"text": "a\\ud800", "label": "x"}\n', b"text,label\na,x\n", b"x a\n"]).flatmap(
            lambda good: st.integers(0, len(good)).map(lambda cut: good[:cut])
        ),
    ),
    file_format=st.sampled_from(["csv", "tsv", "json", "jsonl", "labeled_lines", "parquet"]),
)
def test_property_any_bytes_either_load_or_raise_a_data_error(content, file_format):
    """Whatever a file holds (random bytes, random text, a good file cut anywhere), loading it gives
    a dataset or a HydraBertDataError: never a traceback from deep inside a parser."""
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "train.data"), "wb") as handle:
            handle.write(content)
        cfg = TaskDataConfig(name="t", data_dir=folder, train_file="train.data", file_format=file_format)
        try:
            task = load_task_splits(cfg)
        except HydraBertDataError as err:
            assert str(err).startswith("Task 't'"), err
        else:
            assert len(task.splits["train"]) > 0


CELL = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=25).filter(str.strip)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(st.tuples(CELL, st.sampled_from(["neg", "pos", "neu"])), min_size=1, max_size=8),
    file_format=st.sampled_from(["csv", "tsv", "jsonl"]),
)
def test_property_csv_tsv_jsonl_round_trip_any_text(rows, file_format):
    """Quotes, commas, tabs and non-ASCII text come back exactly as written."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"train.{file_format}")
        with open(path, "w", encoding="utf-8", newline="") as handle:
            if file_format == "jsonl":
                handle.writelines(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows)
            else:
                writer = csv.writer(handle, delimiter="," if file_format == "csv" else "\t")
                writer.writerow(["text", "label"])
                writer.writerows(rows)
        task = load_task_splits(TaskDataConfig(name="t", data_dir=folder, train_file=os.path.basename(path)))
    split = task.splits["train"]
    assert split["text"] == [text for text, _ in rows]
    assert [task.labels[i] for i in split["label"]] == [label for _, label in rows]


# ------------------------------------------------------------------------------ code that travels
TRAVELLING = ("configuration_hydrabert.py", "modeling_hydrabert.py", "pipeline_hydrabert.py")
ALLOWED_IMPORTS = {
    "__future__", "collections", "contextlib", "dataclasses", "functools", "inspect", "itertools", "json", "math",
    "os", "re", "typing", "torch", "transformers",
    "tqdm",  # a dependency of transformers (encode's progress bar)
    "numpy",  # a dependency of transformers (the configuration's torch-free post-processing)
}  # fmt: skip
BANNED_CALLS = {
    "eval", "exec", "compile", "__import__", "breakpoint", "input",
    "os.system", "os.popen", "os.remove", "os.unlink", "os.rmdir", "os.removedirs", "os.rename", "os.replace",
    "os.mkdir", "os.makedirs", "os.chmod", "os.chown", "os.symlink", "os.link", "os.truncate", "os.kill",
    "os.fork", "os.putenv", "os.environ.update", "torch.load", "torch.save", "torch.hub.load",
    "torch.hub.download_url_to_file",
}  # fmt: skip
BANNED_PREFIXES = (
    "subprocess.",
    "shutil.",
    "pickle.",
    "socket.",
    "urllib.",
    "requests.",
    "http.",
    "os.exec",
    "os.spawn",
)
BANNED_METHODS = {"write_text", "write_bytes", "unlink", "rmdir", "mkdir", "touch", "rename", "symlink_to"}
BANNED_MODULES = {"socket", "urllib", "requests", "http", "httpx", "subprocess", "shutil", "pickle", "marshal",
                  "ctypes", "importlib", "builtins", "tempfile", "multiprocessing"}  # fmt: skip


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "?")  # ?: a call, subscript... (Path(p).open)
    return ".".join(reversed(parts))


def travel_violations(source: str, filename: str = "<code>") -> list[str]:
    """What in `source` must not run on a stranger's machine under trust_remote_code."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root not in ALLOWED_IMPORTS or root in BANNED_MODULES:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level != 1 or node.module not in {name.removesuffix(".py") for name in TRAVELLING}:
                    found.append(f"{where}: relative import {'.' * node.level}{node.module}")
            elif node.module.split(".")[0] not in ALLOWED_IMPORTS:
                found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            method = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if name in BANNED_CALLS or name.startswith(BANNED_PREFIXES) or method in BANNED_METHODS:
                found.append(f"{where}: call {name or method}")
            elif name == "os.open":  # flags, not a mode: not checked, so not allowed
                found.append(f"{where}: call os.open")
            elif name in ("open", "io.open") or method == "open":
                # open(path, mode) or Path(...).open(mode): only reading is allowed.
                position = 1 if name in ("open", "io.open") else 0
                mode = node.args[position] if len(node.args) > position else None
                mode = next((k.value for k in node.keywords if k.arg == "mode"), mode)
                if mode is not None and (
                    not isinstance(mode, ast.Constant) or set(str(mode.value)) & set("wax+")
                ):
                    found.append(f"{where}: {ast.unparse(node)} may write")
        elif isinstance(node, ast.Name) and node.id in ("__builtins__", "globals", "locals", "vars"):
            found.append(f"{where}: {node.id}")
    return found


def test_the_checker_catches_each_forbidden_construct():
    snippets = [
        "import socket", "import urllib.request", "from http import client", "import requests",
        "import subprocess", "import pickle", "from ..data import x", "from .data import load",
        "import pandas", "os.system('ls')", "os.remove(p)", "shutil.rmtree(p)", "subprocess.run(['ls'])",
        "eval('1')", "exec('x=1')", "compile('1', 'f', 'eval')", "__import__('os')", "torch.load(p)",
        "torch.save(x, p)", "torch.hub.load('a', 'b')", "open(p, 'w')", "open(p, mode='a')", "open(p, 'rb+')",
        "open(p, m)", "Path(p).write_text('x')", "os.makedirs(p)", "pickle.loads(b)", "os.execv('a', [])",
        "getattr(__builtins__, 'eval')", "Path(p).open('w')", "os.open(p, 1)", "io.open(p, 'wb')",
    ]  # fmt: skip
    for snippet in snippets:
        assert travel_violations(snippet), snippet
    for fine in ["import torch", "from transformers import AutoModel", "open(p)", "open(p, 'rb')",
                 "os.path.join(a, b)", "os.listdir(p)", "from .configuration_hydrabert import X"]:  # fmt: skip
        assert not travel_violations(fine), fine


@pytest.mark.parametrize("filename", TRAVELLING)
def test_travelling_files_import_only_torch_transformers_and_each_other_and_stay_inert(filename):
    with open(os.path.join(PACKAGE, filename), encoding="utf-8") as handle:
        source = handle.read()
    assert travel_violations(source, filename) == []


def test_weights_are_written_as_safetensors_only(tiny_model, tmp_path):
    from safetensors import safe_open

    tiny_model.save_pretrained(tmp_path / "model")
    files = set(os.listdir(tmp_path / "model"))
    assert "model.safetensors" in files
    assert not {name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))}, files

    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as weights:
        assert set(weights.keys()) == set(tiny_model.state_dict())


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


@pytest.mark.parametrize("revision", [None, "0123456789abcdef0123456789abcdef01234567"])
def test_model_card_snippets_pin_revision(tiny_model, tiny_tokenizer, tmp_path, revision):
    from hydrabert.model_card import generate_model_card

    overrides = {"model_id": "user/hydrabert-demo"}
    if revision:
        overrides["revision"] = revision
    card = str(generate_model_card(tiny_model, tmp_path, tokenizer=tiny_tokenizer, **overrides))
    blocks = _python_blocks(card)
    loads = []
    for block in blocks:
        tree = ast.parse(block)
        assigned = {
            target.id: node.value.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _dotted(node.func).split(".")[-1] in (
                "from_pretrained",
                "pipeline",
            ):
                keywords = {k.arg: k.value for k in node.keywords}
                assert "revision" in keywords, f"unpinned: {ast.unparse(node)}"
                value = keywords["revision"]
                pinned = (
                    value.value
                    if isinstance(value, ast.Constant)
                    else assigned.get(getattr(value, "id", None))
                )
                assert pinned == (revision or "main"), ast.unparse(node)
                loads.append(ast.unparse(node))
    assert any("trust_remote_code=True" in call for call in loads) and len(loads) >= 3, loads


# ---------------------------------------------------------------------------------------- memory
def test_encode_normalizes_batch_by_batch_with_the_same_result(tiny_model, tiny_tokenizer):
    sentences = [" ".join(TINY_WORDS[: 1 + i % 9]) for i in range(40)]
    plain = tiny_model.encode(sentences, tiny_tokenizer, batch_size=7)
    normalized = tiny_model.encode(sentences, tiny_tokenizer, batch_size=7, normalize=True)
    torch.testing.assert_close(normalized, torch.nn.functional.normalize(plain, dim=-1))
    assert normalized.dtype == torch.float32 and normalized.shape == (40, 32)
