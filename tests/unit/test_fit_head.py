"""`fit_head` and the runtime embedding cache on small synthetic inputs: early stopping on validation macro-F1, the
kept epoch, calibration; embeddings computed once per runtime and data, never reused across runtimes."""

from __future__ import annotations

import numpy as np
import pytest

from multitask.config import TaskSpec
from multitask.data import Example, TaskDataset
from multitask.training.add_task import AddTaskSettings, fit_head
from multitask.training.embedding_cache import cached_runtime_embeddings, runtime_cache_path
from multitask.training.metrics import classification_metrics

SPEC = TaskSpec(name="blobs", labels=("a", "b", "c"), hidden_size=16)


def blobs(n: int, seed: int, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8, dtype=np.float32) * 3
    y = rng.integers(0, 3, size=n)
    return (centres[y] + rng.normal(scale=spread, size=(n, 8))).astype(np.float32), y


def test_a_separable_task_is_learnt_stops_early_and_is_calibrated():
    (x, y), (vx, vy) = blobs(300, 0), blobs(90, 1)
    settings = AddTaskSettings(max_epochs=40, patience=3, learning_rate=1e-2)  # a 16-wide head learns fast so
    fitted = fit_head(SPEC, x, y, vx, vy, settings, dropout=0.0)
    assert len(fitted.history) < settings.max_epochs  # macro-F1 stops rising: patience ends it
    f1s = [h["validation_macro_f1"]["blobs"] for h in fitted.history]
    kept = fitted.history[fitted.epochs - 1]
    assert kept["validation_macro_f1"]["blobs"] == max(f1s)  # the kept epoch has the best macro-F1 ...
    ties = [h["validation_loss"] for h in fitted.history if h["validation_macro_f1"]["blobs"] == max(f1s)]
    assert kept["validation_loss"] == min(ties)  # ... and, among ties, the lowest validation loss
    assert len(fitted.history) - fitted.epochs <= settings.patience
    probabilities = fitted.probabilities(blobs(200, 2)[0])
    assert probabilities.shape == (200, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    test_x, test_y = blobs(200, 2)
    assert classification_metrics(test_y, fitted.probabilities(test_x), SPEC.labels)["macro_f1"] > 0.95
    assert fitted.calibration["temperature"] == pytest.approx(float(fitted.head.temperature))
    assert fitted.calibration["ece_after"] <= fitted.calibration["ece_before"] + 1e-6


def test_the_same_seed_gives_the_same_head():
    (x, y), (vx, vy) = blobs(120, 3, spread=1.5), blobs(60, 4, spread=1.5)
    settings = AddTaskSettings(max_epochs=6, min_steps_per_epoch=5)
    first, second = (fit_head(SPEC, x, y, vx, vy, settings) for _ in range(2))
    assert all(
        np.array_equal(a, b) for a, b in zip(first.head.state_dict().values(), second.head.state_dict().values())
    )


class CountingRuntime:
    """An EncoderRuntime's surface as the cache sees it; counts the texts it encodes."""

    fingerprint, embedding_dim, max_length = "623b1b2b2099a7e9", 4, 128

    def __init__(self, dtype: str):
        self.dtype, self.encoded = dtype, 0

    def describe(self) -> dict:
        return {"fingerprint": self.fingerprint, "dtype": self.dtype, "runtime": "onnx", "max_length": 128}

    def encode(self, texts, max_batch=0, progress=None):
        self.encoded += len(texts)
        scale = 1.0 if self.dtype == "float32" else 1.01

        class Batch:
            embeddings = np.array([[len(t) * scale, 0, 0, 1] for t in texts], np.float32)

        return Batch()


def test_runtime_embeddings_are_cached_per_runtime_and_data(tmp_path):
    data = TaskDataset("blobs", (Example("one", 0), Example("three", 1)), "data.jsonl")
    int8, float32 = CountingRuntime("int8"), CountingRuntime("float32")
    first = cached_runtime_embeddings(int8, data, tmp_path, progress=False)
    again = cached_runtime_embeddings(int8, data, tmp_path, progress=False)
    assert int8.encoded == 2 and np.array_equal(first, again)  # the second call read the cache
    other = cached_runtime_embeddings(float32, data, tmp_path, progress=False)
    assert float32.encoded == 2 and not np.array_equal(first, other)  # another runtime: its own entry
    assert runtime_cache_path(tmp_path, int8, data) != runtime_cache_path(tmp_path, float32, data)
    more = TaskDataset("blobs", (*data.examples, Example("five", 0)), "data.jsonl")
    cached_runtime_embeddings(int8, more, tmp_path, progress=False)
    assert int8.encoded == 5  # changed data: encoded again
