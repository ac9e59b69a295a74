"""docs/task-config.md documents every TaskDataConfig field: a field without a row, a row without a field,
or a documented type or default that differs from the dataclass fails here. The page is linked from the
README and from run_mtl.py --help, where users look."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys

import pytest

from hydrabert.data import TaskDataConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "task-config.md")
# A cell is split on pipes that are not escaped (`str \| None` is one cell).
_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


def documented_keys(text: str) -> dict[str, dict[str, str]]:
    """The rows of the table under '## Keys': key -> {type, default, example, meaning} (cells unescaped)."""
    section = text.split("\n## Keys\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip().replace("\\|", "|") for cell in _CELL_SEPARATOR.split(line.strip())[1:-1]]
        key, type_, default, example, meaning = cells
        rows[key.strip("`")] = {"type": type_, "default": default, "example": example, "meaning": meaning}
    return rows


def _code(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), f"not one code span: {cell!r}"
    return cell[1:-1]


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, str]]:
    with open(DOC, encoding="utf-8") as handle:
        return documented_keys(handle.read())


def test_every_field_has_exactly_one_row_and_every_row_a_field(rows):
    fields = [field.name for field in dataclasses.fields(TaskDataConfig)]
    assert [name for name in fields if name not in rows] == [], "fields missing from docs/task-config.md"
    assert [name for name in rows if name not in fields] == [], "rows for fields TaskDataConfig does not have"
    assert list(rows) == fields, "rows in the dataclass's order"


def test_documented_types_and_defaults_are_the_dataclasses(rows):
    for field in dataclasses.fields(TaskDataConfig):
        row = rows[field.name]
        assert _code(row["type"]) == field.type, field.name  # the annotation, as written in the source
        if field.default is dataclasses.MISSING:
            assert row["default"] == "required", field.name
        else:
            assert json.loads(_code(row["default"])) == field.default, field.name
        assert row["meaning"], field.name


def test_each_example_is_valid_json_that_the_config_accepts(rows):
    base = {"name": "t", "data_dir": "x"}
    for key, row in rows.items():
        value = json.loads(_code(row["example"]))
        options = {**base, key: value}
        if key in ("label_ids", "streaming"):  # a streamed task declares its labels
            options["labels"] = ["a", "b"]
        if key == "source":  # a task reading another's rows gives no data keys of its own
            del options["data_dir"]
        TaskDataConfig.from_dict(options)  # raises on an example that the config refuses


def test_a_missing_row_is_caught(rows):
    """The check has teeth: a page without a field's row fails it."""
    with open(DOC, encoding="utf-8") as handle:
        text = handle.read()
    without = "\n".join(line for line in text.splitlines() if not line.startswith("| `class_weights`"))
    assert "class_weights" not in documented_keys(without)
    assert "class_weights" in rows


def test_the_page_is_linked_from_the_readme_and_the_help():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        assert "(docs/task-config.md)" in handle.read()
    sys.path.insert(0, REPO)
    import run_mtl

    (tasks,) = [field for field in dataclasses.fields(run_mtl.DataArguments) if field.name == "tasks"]
    assert "docs/task-config.md" in tasks.metadata["help"]
