"""A text's answer must not depend on what it is batched with: every CPU runtime the service offers, on the shipped
checkpoint, over the full shared topic and sentiment test splits, each text alone against the same text inside
random passes of other test texts (what a continuously batching Encoder does to a request).

The tolerance is the service's promise for every CPU runtime: 1e-5 on any served score, and no label that changes.
float32 passes differ from single-text ones by rounding only (~1e-7: padding and batch size change the kernels'
summation order); the shipped checkpoint's int8 has its activation scales fixed (static quantization from its
`activation_ranges.json`), so its passes are invariant as float32's are. A checkpoint without activation ranges gets
dynamic int8, whose per-pass activation scales made answers move by up to 0.33 with batch mates: it runs one text
per pass (`max_pass_texts`). bench/batch_invariance.py shows each.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from multitask.batch_invariance import compare_answers, encode_in_random_passes, measure_batch_invariance
from multitask.checkpoint.format import ACTIVATION_RANGES_FILE
from multitask.runtime.onnx_cache import INT8_FILE
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


def test_the_int8_runtime_batches_with_fixed_activation_scales(served):
    if served.runtime.dtype != "int8":
        pytest.skip("float32 runtimes have no activation scales")
    batch = served.runtime.encode(["a", "bb bb", "ccc ccc ccc"], max_batch=32)
    assert batch.pass_sizes == [3]  # shared passes: the tests above prove them invariant
    assert served.runtime.describe()["activations"] == "static"
    assert served.runtime.describe()["max_pass_texts"] == 0


def test_without_activation_ranges_int8_runs_one_text_per_pass_until_they_are_written(tmp_path):
    """A checkpoint trained before activation ranges (or whose file was lost) still serves int8, invariant by
    running each text alone; once `activation_ranges.json` is in it, the cached int8 file is quantized again, with
    fixed scales, and batches."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(SHIPPED_CHECKPOINT, checkpoint, ignore=shutil.ignore_patterns(ACTIVATION_RANGES_FILE, "report"))
    cache = tmp_path / "onnx"  # not the shared cache: its int8 file is the static one, and stays so
    texts = ["a", "bb bb", "ccc ccc ccc"]

    dynamic = ServedModel.load(checkpoint, runtime="onnx-int8", device="cpu", dtype="float32", onnx_cache_dir=cache)
    assert dynamic.runtime.describe()["activations"] == "dynamic"
    assert "activation_ranges.json" in json.loads((dynamic.runtime.directory / INT8_FILE).read_text())["why_dynamic"]
    batch = dynamic.runtime.encode(texts, max_batch=32)
    assert batch.pass_sizes == [1, 1, 1] and dynamic.runtime.describe()["max_pass_texts"] == 1

    shutil.copyfile(SHIPPED_CHECKPOINT / ACTIVATION_RANGES_FILE, checkpoint / ACTIVATION_RANGES_FILE)
    static = ServedModel.load(checkpoint, runtime="onnx-int8", device="cpu", dtype="float32", onnx_cache_dir=cache)
    assert static.runtime.directory == dynamic.runtime.directory
    assert static.runtime.describe()["activations"] == "static"
    assert static.runtime.encode(texts, max_batch=32).pass_sizes == [3]
    assert not np.allclose(static.runtime.forward(texts)[0], batch.embeddings, atol=1e-4)  # really requantized
