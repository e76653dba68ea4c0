"""Shared helpers of the graph tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json

import numpy as np

from tests.support.paths import SHARED_DATA

METRICS = {"topic": {"test": {"accuracy": 0.5, "macro_f1": 0.4}}, "sentiment": {"test": {"accuracy": 0.6}}}


def validation_texts(task: str, count: int = 256) -> list[str]:
    """Texts of a shared validation split (what training measures activation ranges on), synthetic ones without
    ../shared/data."""
    path = SHARED_DATA / task / "validation.jsonl"
    if path.is_file():
        return [json.loads(line)["text"] for line in path.read_text().splitlines()[:count]]
    return [f"Sentence number {i} about markets, music and football, said the {task} desk." for i in range(count)]


def sample_texts(count: int) -> list[str]:
    """Real sentences from the shared data sets (topic and sentiment test splits, interleaved)."""
    texts: list[str] = []
    files = [SHARED_DATA / "topic" / "test.jsonl", SHARED_DATA / "sentiment" / "test.jsonl"]
    lines = [path.read_text().splitlines()[: count // 2 + 1] for path in files if path.is_file()]
    for pair in zip(*lines):
        texts.extend(json.loads(line)["text"] for line in pair)
    fallback = [f"Sentence number {i} about markets, music and football." for i in range(count)]
    return (texts + fallback)[:count]


ANSWER_TOLERANCE = 1e-5
"""How far a served score may be from the same checkpoint and runtime in-process (`served_model`), for every CPU
runtime (onnx, onnx-int8, torch in float32): the batch-invariance tolerance (tests/model/test_batch_invariance.py),
since in the service a text shares its encoder passes with other requests' texts."""


def assert_matches_model(got: dict, want: dict, tasks: list[str], atol: float = ANSWER_TOLERANCE) -> None:
    """A service result equals the in-process `ServedModel.predict` result for these tasks."""
    for task in tasks:
        assert list(got[task]["scores"]) == list(want[task]["scores"])  # same labels, same order
        assert np.allclose(list(got[task]["scores"].values()), list(want[task]["scores"].values()), atol=atol)
        assert abs(got[task]["confidence"] - want[task]["confidence"]) <= atol
        scores = sorted(want[task]["scores"].values(), reverse=True)
        if scores[0] - scores[1] > 2 * atol:  # a near-tie may flip within tolerance
            assert got[task]["label"] == want[task]["label"]
