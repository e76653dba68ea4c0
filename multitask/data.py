"""Reading labelled data: one task's file of texts and labels (tokenizing is the encoder's, `SentenceEncoder`).

Files are JSON Lines or CSV with `text` and `label` per row. Every bad row (unknown label, empty text, broken
JSON/CSV, missing field) is reported with its file and line, all of them at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from multitask.config import TaskSpec
from multitask.errors import DataError

MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # index into the task's labels


@dataclass(frozen=True)
class TaskDataset:
    task: str
    examples: tuple[Example, ...]
    source: str  # file it came from, for messages

    def __len__(self) -> int:
        return len(self.examples)

    def label_counts(self, num_labels: int) -> list[int]:
        counts = [0] * num_labels
        for example in self.examples:
            counts[example.label] += 1
        return counts

    def fingerprint(self) -> str:
        """Hash of the texts and labels, to key caches on."""
        digest = hashlib.sha256()
        for example in self.examples:
            digest.update(f"{example.label}\t{example.text}\n".encode())
        return digest.hexdigest()[:16]


def read_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line number, row, parse error) for a .jsonl/.json or .csv file."""
    suffix = path.suffix.lower()
    # utf-8-sig: files saved by Excel and Windows editors start with a byte-order mark, which is not data
    if suffix in {".jsonl", ".json", ".ndjson"}:
        with path.open(encoding="utf-8-sig", errors="strict") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield line_no, None, f"invalid JSON ({exc.msg})"
                    continue
                yield (line_no, row, None) if isinstance(row, dict) else (line_no, None, "row is not a JSON object")
    elif suffix == ".csv":
        with path.open(encoding="utf-8-sig", errors="strict", newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
                yield 1, None, f"CSV header must have 'text' and 'label' columns, got {reader.fieldnames}"
                return
            for row in reader:
                yield reader.line_num, row, None
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl or .csv with 'text' and 'label'.")


def read_task_file(path: str | Path, task: TaskSpec) -> TaskDataset:
    """Read one task's labelled file; raise `DataError` listing every bad row as `file:line: problem`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (data for task {task.name!r}).")
    label_ids = {label: i for i, label in enumerate(task.labels)}
    examples: list[Example] = []
    problems: list[str] = []
    try:
        for line_no, row, error in read_rows(path):
            if error is None:
                error = _row_problem(row, label_ids)
            if error is not None:
                problems.append(f"{path}:{line_no}: {error}")
                continue
            examples.append(Example(text=row["text"].strip(), label=label_ids[row["label"]]))
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
    if problems:
        shown = problems[:MAX_REPORTED_ERRORS]
        more = f"\n... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DataError(f"{len(problems)} bad row(s) for task {task.name!r}:\n" + "\n".join(shown) + more)
    if not examples:
        raise DataError(f"{path}: no examples for task {task.name!r}.")
    return TaskDataset(task=task.name, examples=tuple(examples), source=str(path))


def file_labels(path: str | Path) -> tuple[str, ...]:
    """The distinct labels of a file's rows, sorted: a new task's labels when none are given. Rows without a string
    label are skipped here; `read_task_file` reports them with their lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    labels: set[str] = set()
    try:
        for _, row, _ in read_rows(path):
            if row is not None and isinstance(row.get("label"), str) and row["label"]:
                labels.add(row["label"])
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return tuple(sorted(labels))


def _row_problem(row: dict, label_ids: dict[str, int]) -> str | None:
    text, label = row.get("text"), row.get("label")
    if not isinstance(text, str):
        return "missing or non-string 'text'"
    if not text.strip():
        return "empty text"
    if not isinstance(label, str):
        return "missing or non-string 'label'"
    if label not in label_ids:
        return f"unknown label {label!r}; expected one of {list(label_ids)}"
    return None
