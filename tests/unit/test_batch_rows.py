"""The per-batch logic of `multitask classify` (multitask/batch/rows.py), without Ray or an encoder: a fake encode
function, the shipped checkpoint's real numpy heads. Every row comes out, in order; bad rows carry an error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from multitask.batch.rows import EMBEDDING, ERROR, ResultColumns, classify_table, encode_table, text_problem
from multitask.numpy_head import NumpyHead
from multitask.results import label_scores
from tests.support.paths import SHIPPED_CHECKPOINT

DIM = 1024


def fake_encode(texts: list[str]) -> tuple[np.ndarray, list[bool]]:
    """A deterministic embedding per text (seeded by its characters); texts over 20 characters 'truncated'."""
    rows = [np.random.default_rng(sum(map(ord, text))).standard_normal(DIM).astype(np.float32) for text in texts]
    return np.stack(rows), [len(text) > 20 for text in texts]


@pytest.fixture(scope="module")
def heads() -> dict[str, NumpyHead]:
    return {task: NumpyHead.load(SHIPPED_CHECKPOINT, task) for task in ("topic", "sentiment")}


def test_bad_rows_are_kept_with_an_error_and_no_results(heads):
    table = pa.table({"id": [0, 1, 2, 3, 4], "text": ["Stocks fell sharply today.", "", None, "  \u200b ", "Goal!"]})
    out = classify_table(encode_table(table, "text", fake_encode, DIM), heads, ResultColumns(("topic", "sentiment")))
    rows = out.to_pylist()
    assert [row["id"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row[ERROR] for row in rows] == [None, "empty text", "no text (null)", "empty text", None]
    for row in rows:
        bad = row[ERROR] is not None
        assert (row["topic_label"] is None, row["sentiment_confidence"] is None, row["truncated"] is None) == (bad,) * 3
    assert rows[0]["truncated"] is True and rows[4]["truncated"] is False
    assert out.column_names == ["id", "text"] + ResultColumns(("topic", "sentiment")).names()


def test_results_are_the_heads_label_scores_of_each_rows_embedding(heads):
    texts = ["The senate passed the bill.", "What a wonderful film.", "The new chip is fast."]
    out = classify_table(
        encode_table(pa.table({"text": texts}), "text", fake_encode, DIM),
        heads,
        ResultColumns(("topic", "sentiment"), with_scores=True, with_embeddings=True),
    ).to_pylist()
    embeddings, _ = fake_encode(texts)
    for task, head in heads.items():
        for row, probs in zip(out, head.probabilities(embeddings).tolist()):
            want = label_scores(head.task.labels, probs)  # what the head deployment answers
            assert row[f"{task}_label"] == want["label"]
            assert row[f"{task}_confidence"] == pytest.approx(want["confidence"], abs=1e-6)
            assert list(row[f"{task}_scores"]) == list(head.task.labels)
            assert list(row[f"{task}_scores"].values()) == pytest.approx(list(want["scores"].values()), abs=1e-6)
    assert np.allclose(np.array([row["embedding"] for row in out]), embeddings)
    assert EMBEDDING not in out[0]


def test_a_text_that_breaks_the_encoder_fails_alone(heads):
    def encode(texts: list[str]):
        if "boom" in texts:
            raise RuntimeError("the runtime choked")
        return fake_encode(texts)

    out = encode_table(pa.table({"text": ["first", "boom", "third"]}), "text", encode, DIM)
    assert out.column(ERROR).to_pylist() == [None, "encoder failed: RuntimeError: the runtime choked", None]
    assert out.column("truncated").to_pylist() == [False, None, False]


def test_a_column_that_is_not_text_keeps_its_values_as_text_and_flags_them():
    """JSON Lines rows whose `text` is a number or a list reach the stage as Python objects (Ray Data's pickled
    column); a column of another type takes the same path: each value kept as its JSON text, the row flagged."""
    table = pa.table({"id": [1, 2, 3], "text": pa.array([[1, 2], None, [3]], pa.list_(pa.int64()))})
    out = encode_table(table, "text", fake_encode, DIM)
    assert out.column("text").type == pa.string()
    assert out.column("text").to_pylist() == ["[1, 2]", None, "[3]"]
    assert out.column(ERROR).to_pylist() == ["not a string: list", "no text (null)", "not a string: list"]


def test_a_batch_without_the_text_column_reads_as_nulls():
    """JSON Lines rows that never name the column: Ray Data's block for them has no such column."""
    out = encode_table(pa.table({"id": [1, 2]}), "text", fake_encode, DIM)
    assert out.column("text").to_pylist() == [None, None]
    assert out.column(ERROR).to_pylist() == ["no text (null)"] * 2


def test_csv_output_stores_scores_and_embeddings_as_json_text(heads):
    encoded = encode_table(pa.table({"text": ["Hello there.", None]}), "text", fake_encode, DIM)
    columns = ResultColumns(("sentiment",), with_scores=True, with_embeddings=True, nested_as_json=True)
    out = classify_table(encoded, heads, columns)
    assert all(pa.types.is_string(out.schema.field(name).type) for name in ("sentiment_scores", "embedding"))
    scores, embedding = out.column("sentiment_scores")[0].as_py(), out.column("embedding")[0].as_py()
    assert list(json.loads(scores)) == ["positive", "neutral", "negative"] and len(json.loads(embedding)) == DIM
    assert out.column("embedding")[1].as_py() is None


def test_text_problems_match_the_services_refusals():
    assert text_problem("ok") is None
    assert text_problem("\ud800 lone") == "invalid Unicode (a lone surrogate)"
    assert text_problem(float("nan")) == "no text (null)"  # pandas' missing value
    assert text_problem(b"bytes") == "not a string: bytes"
