"""The shared encoder deployment: tokenize -> transformer -> mean pool -> projection, with dynamic batching.

Concurrent `encode` calls are batched together (`@serve.batch`, up to `max_batch_size` calls; the ingress
already sends one call per batch of requests, so a call may bring more texts than that). The gathered texts are tokenized once, sorted by length and run in forward passes of at most `max_batch_size` texts
and `max_batch_tokens` padded tokens (`EncoderRuntime.forward`), in a worker thread, so the replica's event loop
keeps accepting requests and fills the next batch meanwhile. Every text is encoded once per request, whatever the
number of heads that read its embedding.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import torch
from ray import serve

from deployments.metrics import EncoderMetrics
from deployments.runtime import EncoderRuntime
from deployments.schemas import EncodedTexts, EncoderSettings

logger = logging.getLogger("ray.serve")


@serve.deployment(
    name="Encoder",
    ray_actor_options={"num_cpus": 1.0},
    max_ongoing_requests=64,
    max_queued_requests=256,
    user_config=EncoderSettings().model_dump(),
)
class Encoder:
    def __init__(self, checkpoint: str, device: str = "auto", dtype: str = "auto"):
        self.runtime = EncoderRuntime.load(checkpoint, device, dtype)
        self.fingerprint = self.runtime.fingerprint
        self.metrics = EncoderMetrics()
        self.settings = EncoderSettings()
        self._broken: str | None = None  # set when the device fails; check_health then restarts the replica
        self._batches = 0
        self._texts = 0
        self._largest_batch = 0
        logger.info(f"Encoder ready: {self.runtime.describe()}")

    def reconfigure(self, user_config: dict) -> None:
        self.settings = EncoderSettings.model_validate(user_config or {})
        self._encode_batch.set_max_batch_size(self.settings.max_batch_size)
        self._encode_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)

    async def encode(self, texts: list[str]) -> EncodedTexts:
        """Texts -> their embeddings (n, embedding_dim) float32, in order, and which were truncated."""
        if not texts:
            return EncodedTexts(np.zeros((0, self.runtime.dimension), np.float32), [], self.fingerprint)
        # the ingress may gather many requests into one call: chunks of at most max_batch_size texts keep one
        # gathered batch (at most max_batch_size calls) bounded; EncoderRuntime.forward cuts it into passes
        size = self.settings.max_batch_size
        parts = await asyncio.gather(
            *(self._encode_batch(list(texts[i : i + size])) for i in range(0, len(texts), size))
        )
        embeddings = np.concatenate([part[0] for part in parts]) if len(parts) > 1 else parts[0][0]
        truncated = [flag for part in parts for flag in part[1]]
        return EncodedTexts(embeddings, truncated, self.fingerprint)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _encode_batch(self, calls: list[list[str]]) -> list[tuple[np.ndarray, list[bool]]]:
        """Several calls' texts -> one (texts, embedding_dim) array, split back per call."""
        texts = [text for call in calls for text in call]
        start = time.perf_counter()
        embeddings, truncated = await asyncio.to_thread(self._forward, texts)
        passes = -(-len(texts) // self.settings.max_batch_size)
        self._batches += passes
        self._texts += len(texts)
        self._largest_batch = max(self._largest_batch, min(len(texts), self.settings.max_batch_size))
        self.metrics.batch_size.observe(len(texts))
        self.metrics.batch_latency_ms.observe((time.perf_counter() - start) * 1000)
        self.metrics.texts.inc(len(texts))
        if any(truncated):
            self.metrics.truncated.inc(sum(truncated))
        out, offset = [], 0
        for call in calls:
            out.append((embeddings[offset : offset + len(call)], truncated[offset : offset + len(call)]))
            offset += len(call)
        return out

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """The blocking part, run in a worker thread: (n,) texts -> (n, embedding_dim) float32."""
        settings = self.settings
        try:
            return self.runtime.forward(
                texts,
                threads=settings.torch_threads,
                max_batch=settings.max_batch_size,
                max_tokens=settings.max_batch_tokens,
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()  # one oversized batch; the replica stays usable
            raise
        except RuntimeError as exc:
            if self.runtime.device.type == "cuda":  # a CUDA error leaves the context unusable: restart the replica
                self._broken = f"{type(exc).__name__}: {exc}"
            raise

    def info(self) -> dict:
        """Identity and settings of this replica (the heads compare `fingerprint` at start)."""
        return {
            **self.runtime.describe(),
            "settings": self.settings.model_dump(),
            "torch_threads": torch.get_num_threads(),
        }

    def stats(self) -> dict:
        """This replica's counters since it started (tests use them to see batching at work)."""
        return {"batches": self._batches, "texts": self._texts, "largest_batch": self._largest_batch}

    def ping(self) -> str:
        return "ok"

    def check_health(self) -> None:
        if self._broken:
            raise RuntimeError(f"Encoder device failed: {self._broken}")
