"""A text's answer must not depend on what it is batched with: every CPU runtime the service offers, on the shipped
checkpoint, over the full shared topic and sentiment test splits, each text alone against the same text inside
random passes of other test texts (what a continuously batching Encoder does to a request).

The tolerance is the service's promise for every CPU runtime: 1e-5 on any served score, and no label that changes.
float32 passes differ from single-text ones by rounding only (~1e-7: padding and batch size change the kernels'
summation order); int8 runs one text per pass (`max_pass_texts`), since its per-pass activation scales made answers
move by up to 0.25 with batch mates (bench/batch_invariance.py shows both).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from multitask.batch_invariance import compare_answers, encode_in_random_passes, measure_batch_invariance
from multitask.served_model import ServedModel
from tests.support.paths import SHARED_DATA, SHIPPED_CHECKPOINT

TOLERANCE = 1e-5
"""Largest change of a served score between a text alone and the same text in any pass, for every CPU runtime."""

CPU_RUNTIMES = ["onnx", "onnx-int8", "torch"]
"""What a CPU Encoder can run (`select_runtime`): torch in float32 here; its GPU path (bf16) is another matter
(README, Serving on a GPU)."""


def shared_test_texts() -> list[str]:
    paths = [SHARED_DATA / task / "test.jsonl" for task in ("topic", "sentiment")]
    if not all(path.is_file() for path in paths):
        pytest.skip(f"the shared test splits are absent ({SHARED_DATA}): the full-split check needs them")
    return [json.loads(line)["text"] for path in paths for line in path.read_text().splitlines()]


@pytest.fixture(scope="module", params=CPU_RUNTIMES)
def served(request, shipped_onnx_cache) -> ServedModel:
    model = ServedModel.load(
        SHIPPED_CHECKPOINT, runtime=request.param, device="cpu", dtype="float32", onnx_cache_dir=shipped_onnx_cache
    )
    model.runtime.set_threads(1)  # one thread: a spinning pool of two collapses on a busy machine
    return model


def assert_invariant(report: dict) -> None:
    for size, by_task in report.items():
        for task, row in by_task.items():
            assert row["max_score_change"] <= TOLERANCE, f"passes of {size}, {task}: {row}"
            assert row["label_changes"] == 0, f"passes of {size}, {task}: {row}"


def test_answers_do_not_depend_on_batch_mates_over_the_full_test_splits(served):
    texts = shared_test_texts()
    assert len(texts) == 899 + 4000
    assert_invariant(measure_batch_invariance(served, texts, pass_sizes=(32,)))


def test_answers_do_not_depend_on_batch_mates_of_very_different_lengths(served):
    """Without the shared data too: short texts in one pass with a text cut to the encoder's window, so that every
    short one is padded to the window."""
    texts = [
        "Hi.",
        "Stocks fell sharply after the announcement.",
        "The striker scored twice in the final and the crowd sang for an hour afterwards.",
        "Über-fast trains 🚄 connect the cities; 東京 is two hours away.",
        "worst customer service ever",
        "The senate passed the budget bill late on Friday.",
    ]
    long_text = "Markets rallied after the vote, and analysts raised their forecasts. " * 30
    alone, _ = served.runtime.forward(texts, max_batch=1)
    for mates in ([long_text], [long_text, "ok"], texts[::-1]):
        batched, _ = served.runtime.forward([*texts, *mates], max_batch=len(texts) + len(mates))
        assert_invariant({len(texts) + len(mates): compare_answers(served, alone, batched[: len(texts)])})
    shuffled = encode_in_random_passes(served, [*texts, long_text] * 4, pass_size=7, seed=5)
    assert_invariant({7: compare_answers(served, np.tile(alone, (4, 1)), shuffled[np.arange(28) % 7 != 6])})


def test_the_int8_runtime_runs_one_text_per_pass_whatever_it_is_asked(served):
    if served.runtime.dtype != "int8":
        pytest.skip("float32 runtimes batch: their passes are invariant as they are")
    batch = served.runtime.encode(["a", "bb bb", "ccc ccc ccc"], max_batch=32)
    assert batch.pass_sizes == [1, 1, 1]
    assert served.runtime.describe()["max_pass_texts"] == 1
