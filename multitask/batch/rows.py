"""What `multitask classify` does to one batch of rows, without Ray: two pure steps on pyarrow tables.

    encoded = encode_table(table, "text", runtime.forward, runtime.embedding_dim)    # the encoder stage
    out = classify_table(encoded, heads, ResultColumns(tasks=("topic",)))             # the heads stage

`encode_table` keeps every input column, checks each row's text (null, not a string, empty: the row gets an `error`
and no embedding; never dropped, never fatal), encodes the good ones in one `encode` call and adds the embeddings,
the truncation flags and the errors. `classify_table` runs each task's head on the embeddings and adds per task a
label and a confidence (and the label scores), as the service's heads compute them (`multitask.results.label_scores`:
the first most probable label, its probability): the same numbers, in columns.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from multitask.config import TaskSpec

EMBEDDING = "__multitask_embedding"
"""The encoder stage's embeddings, read by the heads stage (written out as `embedding` with --with-embeddings)."""
TRUNCATED = "truncated"
ERROR = "error"
OUTPUT_EMBEDDING = "embedding"

Encode = Callable[[list[str]], tuple[np.ndarray, list[bool]]]
"""Texts -> (n, embedding_dim) float32 embeddings and per-text truncation flags: `EncoderRuntime.forward`."""


class Head(Protocol):
    """What the heads stage needs of a task head (`multitask.numpy_head.NumpyHead`)."""

    task: TaskSpec

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ResultColumns:
    """Which result columns the heads stage writes, and how nested values are stored."""

    tasks: tuple[str, ...]
    with_scores: bool = False
    with_embeddings: bool = False
    nested_as_json: bool = False  # CSV has no lists or structs: scores and embeddings become JSON text

    def names(self) -> list[str]:
        """The columns added to the input's, in order."""
        names = []
        for task in self.tasks:
            names += [f"{task}_label", f"{task}_confidence"] + ([f"{task}_scores"] if self.with_scores else [])
        return names + [TRUNCATED] + ([OUTPUT_EMBEDDING] if self.with_embeddings else []) + [ERROR]


def text_problem(value: object) -> str | None:
    """Why a row's text cannot be classified (the service refuses the same texts), or None when it can."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "no text (null)"
    if not isinstance(value, str):
        return f"not a string: {type(value).__name__}"
    if not any(not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf") for ch in value):
        return "empty text"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "invalid Unicode (a lone surrogate)"
    return None


def text_values(table: pa.Table, text_column: str) -> list[object]:
    """The text column's values as Python objects; a batch without the column (JSON Lines rows that never name it)
    reads as nulls."""
    if text_column not in table.column_names:
        return [None] * table.num_rows
    return table.column(text_column).to_pylist()


def _as_text_column(values: list[object]) -> pa.Array:
    """The text column as strings for the output: a JSON Lines column of mixed types (pickled Python objects in Ray
    Data) keeps its strings, and its other values as their JSON text (their rows carry an error)."""
    out = []
    for value in values:
        if value is None or isinstance(value, str) or (isinstance(value, float) and np.isnan(value)):
            out.append(value if isinstance(value, str) else None)
        else:
            out.append(json.dumps(value, default=str))
    return pa.array(out, pa.string())


def encode_table(table: pa.Table, text_column: str, encode: Encode, embedding_dim: int) -> pa.Table:
    """The encoder stage: `table` with its good rows' embeddings, truncation flags and errors added. One `encode`
    call for the batch's good texts; if it fails (a text that breaks the runtime), each text is encoded alone and
    only the rows that still fail get the error."""
    values = text_values(table, text_column)
    problems = [text_problem(value) for value in values]
    good = [i for i, problem in enumerate(problems) if problem is None]
    embeddings = np.zeros((len(values), embedding_dim), np.float32)
    truncated: list[bool | None] = [None] * len(values)
    if good:
        try:
            vectors, flags = encode([values[i] for i in good])
            embeddings[good] = vectors
            for i, flag in zip(good, flags):
                truncated[i] = bool(flag)
        except Exception:  # noqa: BLE001 - find the row(s) at fault; the others are classified
            for i in good:
                try:
                    vectors, flags = encode([values[i]])
                    embeddings[i], truncated[i] = vectors[0], bool(flags[0])
                except Exception as exc:  # noqa: BLE001 - that row's error, kept in its row
                    problems[i] = f"encoder failed: {type(exc).__name__}: {exc}"
    valid = np.array([problem is None for problem in problems], dtype=bool)
    vectors = pa.FixedSizeListArray.from_arrays(
        pa.array(embeddings.reshape(-1), pa.float32()), embedding_dim, mask=pa.array(~valid)
    )
    if text_column in table.column_names:
        column = table.column(text_column)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            table = table.set_column(table.column_names.index(text_column), text_column, _as_text_column(values))
    else:
        table = table.append_column(text_column, pa.nulls(table.num_rows, pa.string()))
    table = table.append_column(EMBEDDING, vectors)
    table = table.append_column(TRUNCATED, pa.array([t if ok else None for t, ok in zip(truncated, valid)], pa.bool_()))
    return table.append_column(ERROR, pa.array(problems, pa.string()))


def embeddings_of(table: pa.Table) -> np.ndarray:
    """The encoder stage's embeddings as (n, embedding_dim) float32 (zeros in rows that have an error)."""
    column = table.column(EMBEDDING).combine_chunks()
    width = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, width)[column.offset : column.offset + len(column)]


def classify_table(table: pa.Table, heads: Mapping[str, Head], columns: ResultColumns) -> pa.Table:
    """The heads stage: the encoder stage's `table` with per task `<task>_label`, `<task>_confidence` (and
    `<task>_scores`), null in rows that have an error; the embedding column dropped, or kept as `embedding`."""
    embeddings = embeddings_of(table)
    failed = table.column(ERROR).is_valid().to_numpy(zero_copy_only=False)
    for task in columns.tasks:
        head = heads[task]
        names = head.task.labels
        probs = head.probabilities(embeddings)  # (n, num_labels) float32
        best = probs.argmax(axis=1)  # the first most probable label, as label_scores picks it
        labels = np.asarray(names, dtype=object)[best]
        confidence = probs[np.arange(len(best)), best].astype(np.float64)
        table = table.append_column(f"{task}_label", pa.array(labels, pa.string(), mask=failed))
        table = table.append_column(f"{task}_confidence", pa.array(confidence, pa.float64(), mask=failed))
        if columns.with_scores:
            table = table.append_column(f"{task}_scores", _scores(names, probs, failed, columns.nested_as_json))
    truncated, error = table.column(TRUNCATED), table.column(ERROR)
    table = table.drop_columns([TRUNCATED, ERROR]).append_column(TRUNCATED, truncated)
    embedding = table.column(EMBEDDING)
    table = table.drop_columns([EMBEDDING])
    if columns.with_embeddings:
        if columns.nested_as_json:
            rows = [None if bad else json.dumps(row) for row, bad in zip(embeddings.tolist(), failed)]
            embedding = pa.array(rows, pa.string())
        else:
            embedding = pc.cast(embedding, pa.list_(pa.float32()))
        table = table.append_column(OUTPUT_EMBEDDING, embedding)
    return table.append_column(ERROR, error)


def _scores(labels: Sequence[str], probs: np.ndarray, failed: np.ndarray, as_json: bool) -> pa.Array:
    """Every label's probability per row: a struct {label: probability}, or its JSON text."""
    if as_json:
        rows = [None if bad else json.dumps(dict(zip(labels, row))) for row, bad in zip(probs.tolist(), failed)]
        return pa.array(rows, pa.string())
    fields = [pa.array(probs[:, i].astype(np.float64), pa.float64()) for i in range(len(labels))]
    return pa.StructArray.from_arrays(fields, names=list(labels), mask=pa.array(failed))
