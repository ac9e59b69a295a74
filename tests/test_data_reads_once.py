"""Each local data file is opened once while a task loads (issue 26): by the project, which parses the
text in memory, with nothing opening it again (no header pass, no encoding pass, no builder's read).

Opens are counted with an audit hook (PEP 578): the interpreter raises an "open" event for every
`open()`, `io.open()` and `os.open()` from any library (pandas, pyarrow's Python file objects, datasets'
compression probes), so the count is the process's, not just the project's.
"""

import json
import os
import sys

import datasets
import pytest

from hydrabert.data import TaskDataConfig, load_task_splits

# The path being watched and the opens seen; an audit hook cannot be removed, so it stays idle otherwise.
_WATCH: dict = {"path": None, "opens": 0}


def _count_opens(event: str, args: tuple) -> None:
    if (
        event == "open"
        and _WATCH["path"] is not None
        and args
        and isinstance(args[0], (str, bytes, os.PathLike))
    ):
        if os.path.realpath(os.fsdecode(args[0])) == _WATCH["path"]:
            _WATCH["opens"] += 1


sys.addaudithook(_count_opens)

ROWS = [("pos", "a good film"), ("neg", "a bad, long film"), ("pos", "fine")]
FILES = {
    "csv": ("train.csv", "text,label\n" + "".join(f'"{text}",{label}\n' for label, text in ROWS), {}),
    "tsv": ("train.tsv", "text\tlabel\n" + "".join(f"{text}\t{label}\n" for label, text in ROWS), {}),
    "jsonl": ("train.jsonl", "".join(json.dumps({"text": t, "label": lb}) + "\n" for lb, t in ROWS), {}),
    "json": ("train.json", json.dumps([{"text": t, "label": lb} for lb, t in ROWS]), {}),
    "labeled_lines": (
        "train.txt",
        "".join(f"{label} {text}\n" for label, text in ROWS),
        {"file_format": "labeled_lines"},
    ),
}


@pytest.fixture
def fresh_datasets_cache(tmp_path, monkeypatch):
    """Nothing cached from an earlier run can stand in for a read."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.mark.parametrize("file_format", list(FILES))
def test_each_local_file_is_opened_once(tmp_path, file_format, fresh_datasets_cache):
    name, content, options = FILES[file_format]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    cfg = TaskDataConfig(name="sentiment", data_dir=str(tmp_path), train_file=name, **options)
    _WATCH.update(path=os.path.realpath(path), opens=0)
    try:
        task = load_task_splits(cfg)
    finally:
        opens, _WATCH["path"] = _WATCH["opens"], None
    assert opens == 1, f"{name} was opened {opens} times while its task loaded"
    assert task.splits["train"]["text"] == [text for _, text in ROWS]
    assert [task.labels[i] for i in task.splits["train"]["label"]] == [label for label, _ in ROWS]


def test_the_counter_sees_every_kind_of_open(tmp_path):
    """The hook counts what the libraries use: builtins.open, os.open and pandas' own file handling."""
    import pandas

    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    _WATCH.update(path=os.path.realpath(path), opens=0)
    try:
        open(path).close()
        os.close(os.open(path, os.O_RDONLY))
        pandas.read_csv(path)
    finally:
        opens, _WATCH["path"] = _WATCH["opens"], None
    assert opens == 3


def test_a_local_csv_task_reaches_datasets_through_few_functions(tmp_path):
    """Issue 26: the road from a task config to `datasets` stays short and readable. A local csv task enters
    load_task_splits, _raw_splits, local_files, _read_file, _decoded_text and _delimited (comprehensions not
    counted), then hands the parsed text to datasets."""
    import hydrabert.data

    (tmp_path / "train.csv").write_text("text,label\na good film,pos\na bad film,neg\n")
    cfg = TaskDataConfig(name="sentiment", data_dir=str(tmp_path), train_file="train.csv")
    package = os.path.dirname(hydrabert.data.__file__)
    library = os.path.dirname(datasets.__file__)
    entered: list[str] = []
    handed_over: list[str] = []

    def trace(frame, event, arg):
        name, caller = frame.f_code.co_filename, frame.f_back.f_code.co_filename if frame.f_back else ""
        if handed_over or event != "call":
            return None
        if name.startswith(library) and caller.startswith(package):
            handed_over.append(frame.f_code.co_qualname)
        elif name.startswith(package) and "<" not in frame.f_code.co_name:
            entered.append(frame.f_code.co_qualname)
        return None

    sys.settrace(trace)
    try:
        load_task_splits(cfg)
    finally:
        sys.settrace(None)
    assert handed_over, "the rows never reached datasets"
    assert len(entered) <= 6, f"{len(entered)} functions before datasets: {' -> '.join(entered)}"
