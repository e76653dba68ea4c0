"""A new task's data, before any training: its labels, every problem a user can fix named with file and line, and
the stratified validation share held out when no validation file is given."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from multitask.data import Example, TaskDataset
from multitask.errors import DataError
from multitask.training.add_task import MIN_EXAMPLES_PER_LABEL, held_out_rows, read_new_task, stratified_split


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def rows(counts: dict[str, int]) -> list[dict]:
    return [{"text": f"{label} text number {i}", "label": label} for label, n in counts.items() for i in range(n)]


@pytest.mark.parametrize("write", [write_jsonl, write_csv])
def test_labels_default_to_the_files_sorted_and_examples_keep_their_order(tmp_path, write):
    path = write(tmp_path / f"data.{'jsonl' if write is write_jsonl else 'csv'}", rows({"rain": 8, "dry": 9}))
    spec, dataset = read_new_task("weather", path, None, 64, tmp_path)
    assert spec.name == "weather" and spec.labels == ("dry", "rain") and spec.hidden_size == 64
    assert len(dataset) == 17 and dataset.examples[0] == Example("rain text number 0", 1)


def test_given_labels_set_the_order_and_an_unknown_label_is_refused_with_its_line(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [*rows({"rain": 8, "dry": 8}), {"text": "hail!", "label": "hail"}])
    spec, _ = read_new_task(
        "weather", write_jsonl(tmp_path / "ok.jsonl", rows({"dry": 8, "rain": 8})), ["rain", "dry"], 64, tmp_path
    )
    assert spec.labels == ("rain", "dry")
    with pytest.raises(DataError, match=rf"{path}:17: unknown label 'hail'; expected one of \['rain', 'dry'\]"):
        read_new_task("weather", path, ["rain", "dry"], 64, tmp_path)


def test_empty_texts_are_refused_with_their_lines(tmp_path):
    data = rows({"rain": 8, "dry": 8})
    data[3]["text"] = "   "
    path = write_csv(tmp_path / "data.csv", data)
    with pytest.raises(DataError, match=rf"{path}:5: empty text"):  # line 1 is the CSV header
        read_new_task("weather", path, None, 64, tmp_path)


def test_a_single_label_is_refused_saying_what_a_task_needs(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", rows({"rain": 20}))
    with pytest.raises(DataError, match=rf"{path}: only the label 'rain'; a task needs at least 2 labels, each with"):
        read_new_task("weather", path, None, 64, tmp_path)


def test_too_few_examples_of_a_label_are_refused_naming_the_label_and_the_minimum(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", rows({"rain": 8, "dry": 3}))
    with pytest.raises(DataError) as error:
        read_new_task("weather", path, None, 64, tmp_path)
    assert f"{path}: too few examples of label(s) {{'dry': 3}}" in str(error.value)
    assert f"at least {MIN_EXAMPLES_PER_LABEL} examples of every label" in str(error.value)
    with pytest.raises(DataError, match=r"too few examples of label\(s\) \{'hail': 0\}"):  # a given label never seen
        read_new_task(
            "weather",
            write_jsonl(tmp_path / "b.jsonl", rows({"rain": 8, "dry": 8})),
            ["rain", "dry", "hail"],
            64,
            tmp_path,
        )


def test_a_missing_file_and_duplicate_labels_are_refused(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_new_task("weather", tmp_path / "nothing.jsonl", None, 64, tmp_path)
    path = write_jsonl(tmp_path / "data.jsonl", rows({"rain": 8, "dry": 8}))
    with pytest.raises(DataError, match="labels must be unique"):
        read_new_task("weather", path, ["rain", "dry", "rain"], 64, tmp_path)


def test_the_held_out_share_is_stratified_seeded_and_leaves_every_label_in_train():
    labels = [0] * 100 + [1] * 10 + [2] * 8
    held = held_out_rows(labels, 3, 0.2, seed=13)
    assert Counter(labels[i] for i in held) == {0: 20, 1: 2, 2: 2}
    assert held == held_out_rows(labels, 3, 0.2, seed=13) != held_out_rows(labels, 3, 0.2, seed=14)
    pairs = [0, 0, 1, 1]
    assert Counter(pairs[i] for i in held_out_rows(pairs, 2, 0.01, seed=1)) == {0: 1, 1: 1}  # at least one
    assert Counter(pairs[i] for i in held_out_rows(pairs, 2, 0.99, seed=1)) == {0: 1, 1: 1}  # never a label's last


def test_a_stratified_split_partitions_the_examples_in_file_order():
    dataset = TaskDataset("weather", tuple(Example(f"t{i}", i % 2) for i in range(40)), "data.jsonl")
    train, validation = stratified_split(dataset, 2, 0.25, seed=3)
    assert len(train) == 30 and len(validation) == 10
    assert sorted(train.examples + validation.examples, key=lambda e: int(e.text[1:])) == list(dataset.examples)
    assert list(train.examples) == sorted(train.examples, key=lambda e: int(e.text[1:]))
    assert validation.source == "data.jsonl (held out)"
