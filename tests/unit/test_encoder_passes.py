"""The Encoder deployment's own part, without Ray: one `encode` of the gathered calls, split back per call, and its
batch size and latency recorded per forward pass (not per gathered call)."""

from __future__ import annotations

import asyncio

import numpy as np

from deployments.encoder import Encoder
from deployments.settings import EncoderSettings
from multitask.runtime.base import EncoderRuntime


class WordCountRuntime(EncoderRuntime):
    """A runtime whose tokens are a text's words and whose embedding is its token count, repeated."""

    device, dtype, threads, fingerprint, embedding_dim, max_length = "cpu", "float32", 1, "f" * 16, 3, 8

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def tokenize(self, texts: list[str]) -> list[tuple[list[int], bool]]:
        return [
            (list(range(min(len(text.split()), self.max_length))), len(text.split()) > self.max_length)
            for text in texts
        ]

    def embed_pass(self, ids: list[list[int]]) -> np.ndarray:
        return np.array([[len(row)] * self.embedding_dim for row in ids], dtype=np.float32)

    def describe(self) -> dict:
        return {"runtime": "words"}


class Observed:
    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)

    def inc(self, value: float = 1) -> None:
        self.values.append(value)


class EncoderMetricsSeen:
    def __init__(self) -> None:
        self.batch_size, self.batch_latency_ms = Observed(), Observed()
        self.texts, self.tokens, self.truncated = Observed(), Observed(), Observed()


def test_gathered_calls_run_in_passes_and_each_pass_is_recorded():
    encoder = object.__new__(Encoder.func_or_class)  # the replica's state, without Serve
    encoder.runtime, encoder.metrics, encoder._broken = WordCountRuntime(), EncoderMetricsSeen(), None
    encoder.settings = EncoderSettings(max_batch_size=2, max_batch_tokens=8)
    encoder._batches = encoder._passes = encoder._texts = encoder._largest_batch = encoder._largest_pass = 0
    calls = [["one", "two words here", "a b"], ["w " * 20, "x y z"]]

    out = asyncio.run(encoder._encode_batch(calls))

    assert [embeddings[:, 0].tolist() for embeddings, _, _ in out] == [[1, 3, 2], [8, 3]]
    assert [truncated for _, truncated, _ in out] == [[False, False, False], [True, False]]
    # one gathered call of 5 texts; token counts 1, 2, 3, 3, 8 under 2 texts and 8 padded tokens a pass
    assert encoder.metrics.batch_size.values == [2, 2, 1]
    assert len(encoder.metrics.batch_latency_ms.values) == 3
    assert encoder.stats() == {"batches": 1, "texts": 5, "largest_batch": 5, "passes": 3, "largest_pass": 2}
    assert encoder.metrics.tokens.values == [17] and encoder.metrics.truncated.values == [1]
