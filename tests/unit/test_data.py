"""Reading labelled data: JSONL and CSV, errors with file:line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from multitask.config import DEFAULT_TASKS
from multitask.data import Example, read_task_file
from multitask.errors import DataError

TOPIC, SENTIMENT = DEFAULT_TASKS


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


# --- reading ---------------------------------------------------------------------------------------------------


def test_jsonl_is_read_with_label_ids_in_label_order(tmp_path):
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "  Great phone  ", "label": "positive"},
            "",  # blank lines are skipped
            {"text": "It rained.", "label": "neutral", "source": "extra keys are fine"},
            {"text": "Awful service", "label": "negative"},
        ],
    )
    dataset = read_task_file(path, SENTIMENT)
    assert dataset.task == "sentiment"
    assert dataset.source == str(path)
    assert [e.text for e in dataset.examples] == ["Great phone", "It rained.", "Awful service"]
    assert [e.label for e in dataset.examples] == [0, 1, 2]
    assert dataset.label_counts(3) == [1, 1, 1]


def test_csv_is_read_with_quoted_commas_and_newlines(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(
        'text,label\n"Apple, Google and Meta report earnings",Business\nA goal!,Sports\n"two\nlines",Politics\n'
    )
    dataset = read_task_file(path, TOPIC)
    assert [e.text for e in dataset.examples] == ["Apple, Google and Meta report earnings", "A goal!", "two\nlines"]
    assert [TOPIC.labels[e.label] for e in dataset.examples] == ["Business", "Sports", "Politics"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_files_with_a_byte_order_mark_are_read(tmp_path, suffix):
    path = tmp_path / f"excel{suffix}"
    body = "text,label\nhello,positive\n" if suffix == ".csv" else '{"text": "hello", "label": "positive"}\n'
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert read_task_file(path, SENTIMENT).examples == (Example("hello", 0),)


def test_every_bad_jsonl_row_is_reported_with_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"text": "fine", "label": "positive"},  # 1
            {"text": "meh", "label": "mixed"},  # 2: unknown label
            {"text": "   ", "label": "neutral"},  # 3: empty text
            '{"text": "broken", "label": ',  # 4: bad JSON
            {"text": "no label"},  # 5: missing field
            {"label": "negative"},  # 6: missing text
            '["a", "list"]',  # 7: not an object
            {"text": "fine again", "label": "negative"},  # 8
            {"text": 42, "label": "negative"},  # 9: text not a string
        ],
    )
    with pytest.raises(DataError) as error:
        read_task_file(path, SENTIMENT)
    message = str(error.value)
    assert message.startswith("7 bad row(s) for task 'sentiment'")
    for line, problem in [
        (2, "unknown label 'mixed'; expected one of ['positive', 'neutral', 'negative']"),
        (3, "empty text"),
        (4, "invalid JSON"),
        (5, "'label'"),
        (6, "'text'"),
        (7, "not a JSON object"),
        (9, "'text'"),
    ]:
        assert re.search(re.escape(f"{path}:{line}: ") + ".*" + re.escape(problem), message), (line, message)
    assert f"{path}:1:" not in message and f"{path}:8:" not in message


def test_every_bad_csv_row_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nfine,Sports\n,Sports\nok,Weather\nshort row\nfine,Business\n")
    with pytest.raises(DataError) as error:
        read_task_file(path, TOPIC)
    message = str(error.value)
    assert message.startswith("3 bad row(s) for task 'topic'")
    assert f"{path}:3: empty text" in message
    assert f"{path}:4: unknown label 'Weather'" in message
    assert f"{path}:5: missing or non-string 'label'" in message


def test_csv_without_text_and_label_columns_is_refused(tmp_path):
    path = tmp_path / "headers.csv"
    path.write_text("sentence,category\nhello,Sports\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:1: CSV header must have 'text' and 'label'")):
        read_task_file(path, TOPIC)


def test_many_bad_rows_are_counted_and_the_first_ones_shown(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [{"text": f"t{i}", "label": "nope"} for i in range(25)])
    with pytest.raises(DataError) as error:
        read_task_file(path, SENTIMENT)
    message = str(error.value)
    assert message.startswith("25 bad row(s)")
    assert f"{path}:20:" in message and "... and 5 more" in message


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("missing.jsonl", None, "file not found"),
        ("train.txt", "hello\n", "unsupported file type '.txt'"),
        ("empty.jsonl", "\n\n", "no examples"),
        ("latin1.jsonl", b'{"text": "caf\xe9", "label": "positive"}\n', "not UTF-8"),
    ],
)
def test_unreadable_files_are_refused_naming_the_file(tmp_path, name, content, problem):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + re.escape(problem)):
        read_task_file(path, SENTIMENT)


def test_dataset_fingerprint_changes_with_texts_and_labels(tmp_path):
    rows = [{"text": "a", "label": "positive"}, {"text": "b", "label": "negative"}]
    first = read_task_file(write_jsonl(tmp_path / "a.jsonl", rows), SENTIMENT).fingerprint()
    same = read_task_file(write_jsonl(tmp_path / "b.jsonl", rows), SENTIMENT).fingerprint()
    rows[1]["label"] = "neutral"
    relabelled = read_task_file(write_jsonl(tmp_path / "c.jsonl", rows), SENTIMENT).fingerprint()
    assert first == same != relabelled
