"""`multitask classify` refuses what it cannot do before any work starts (multitask/batch/files.py and
pipeline.validate): a missing input, an unknown task, a missing or non-text column, an output that holds files. No
Ray is started: each check fails in the driver, with a message naming the problem."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from multitask.batch.files import InputError, resolve_input
from multitask.batch.pipeline import ClassifyJob, validate
from multitask.cli import main


@pytest.fixture
def data(tmp_path):
    folder = tmp_path / "in"
    (folder / "part").mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), folder / "a.parquet")
    pq.write_table(pa.table({"id": [3], "text": ["c"]}), folder / "part" / "b.parquet")
    (folder / "_SUCCESS").write_text("")
    return folder


def classify(capsys, *argv: str) -> tuple[int, str]:
    code = main(["classify", *argv, "--no-progress"])
    return code, capsys.readouterr().err


def test_a_folder_a_glob_and_a_file_name_their_files_in_order(data):
    files = resolve_input(str(data))
    assert files.format == "parquet" and [p.rsplit("/", 2)[-2:] for p in files.paths] == [
        ["in", "a.parquet"],
        ["part", "b.parquet"],
    ]
    assert resolve_input(str(data / "*.parquet")).paths == [str(data / "a.parquet")]
    assert resolve_input(f"file://{data / 'a.parquet'}").paths == [str(data / "a.parquet")]


def test_a_missing_input_fails_at_once(tmp_path, capsys):
    code, err = classify(capsys, str(tmp_path / "nothing.parquet"), str(tmp_path / "out"))
    assert code == 2 and "does not exist" in err and "nothing.parquet" in err
    with pytest.raises(InputError, match="No Parquet, JSON Lines or CSV files"):
        resolve_input(str(tmp_path))


def test_an_unknown_task_fails_at_once(data, tmp_path, capsys):
    code, err = classify(capsys, str(data), str(tmp_path / "out"), "--tasks", "topic", "language")
    assert code == 2 and "No task 'language'" in err and "topic" in err


def test_a_missing_text_column_fails_at_once_for_every_format(tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    (tmp_path / "t.csv").write_text("body,id\nhello,1\n")
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
    for name in ("t.jsonl", "t.csv", "t.parquet"):
        code, err = classify(capsys, str(tmp_path / name), str(tmp_path / f"out-{name}"))
        assert code == 2 and "No column 'text'" in err and "body" in err and "--text-column" in err
    plan = validate(ClassifyJob(input=str(tmp_path / "t.csv"), output=str(tmp_path / "out"), text_column="body"))
    assert plan.files.format == "csv" and plan.rows_in is None  # named, it is found


def test_a_column_that_is_not_text_or_would_be_overwritten_fails(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(InputError, match="holds int64, not text"):
        validate(ClassifyJob(input=str(tmp_path / "ints.parquet"), output=str(tmp_path / "o1")))
    pq.write_table(pa.table({"text": ["a"], "topic_label": ["x"]}), tmp_path / "clash.parquet")
    with pytest.raises(InputError, match=r"already has columns \['topic_label'\]"):
        validate(ClassifyJob(input=str(tmp_path / "clash.parquet"), output=str(tmp_path / "o2")))


def test_an_output_that_holds_files_is_refused_unless_overwrite(data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.parquet").write_text("old")
    with pytest.raises(InputError, match="already holds files; pass --overwrite"):
        validate(ClassifyJob(input=str(data), output=str(out)))
    plan = validate(ClassifyJob(input=str(data), output=str(out), overwrite=True, output_format="csv"))
    assert plan.output_format == "csv" and plan.columns.nested_as_json and plan.rows_in == 3


def test_json_lines_that_are_not_objects_are_refused(tmp_path):
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(InputError, match="line 1: a JSON list"):
        validate(ClassifyJob(input=str(tmp_path / "list.jsonl"), output=str(tmp_path / "o")))
