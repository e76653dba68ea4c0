"""The shared encoder deployment: tokenize -> transformer -> mean pool -> projection, with dynamic batching.

The encoder itself is the inference core's (`multitask/runtime/`, chosen by `select_runtime`): on CPU onnxruntime,
with no torch in the process, exported once per encoder on first start (`runtime: onnx-int8`: quantized to int8);
on a GPU, or with `runtime: torch`, torch. This file adds what Serve needs: batching, settings, metrics, health.

Concurrent `encode` calls are batched continuously (`deployments/batcher.py`): a call that finds the encoder idle
runs at once, calls that arrive during a forward pass form the next one, up to `max_batch_size` texts (the ingress
already sends one call per batch of requests; a larger call runs alone). The gathered texts are tokenized once,
sorted by length and run in passes of at most `max_batch_size` texts and `max_batch_tokens` padded tokens (one text
a pass with `runtime: onnx-int8` on a checkpoint without activation ranges, whose per-pass activation scales would
otherwise make a text's answer depend on its batch mates: `max_pass_texts`), in a worker thread, so the replica's
event loop keeps accepting requests meanwhile. Every text is encoded once per request, whatever the number of heads
that read its embedding.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import ray
from ray import serve

from deployments.batcher import ContinuousBatcher
from deployments.encoded_texts import EncodedTexts
from deployments.metrics import EncoderMetrics
from deployments.options import DEFAULT_OPTIONS
from deployments.settings import EncoderSettings
from multitask.checkpoint.manifest import manifest_summary, read_manifest
from multitask.runtime.passes import ForwardResult
from multitask.runtime.select import select_runtime
from multitask.storage import checkpoint_name, locate_checkpoint

logger = logging.getLogger("ray.serve")


@serve.deployment(name="Encoder", **DEFAULT_OPTIONS["Encoder"])
class Encoder:
    def __init__(
        self,
        checkpoint: str,
        device: str = "auto",
        dtype: str = "auto",
        runtime: str = "auto",
        onnx_cache_dir: str | None = None,
        checkpoint_cache_dir: str | None = None,
    ):
        directory = str(locate_checkpoint(checkpoint, checkpoint_cache_dir))  # a URI: fetched once per node
        gpu_assigned = bool(ray.get_gpu_ids()) if device == "auto" else None  # no GPU given: torch is never imported
        logger.info(f"Encoder: loading {checkpoint} (runtime {runtime}; an ONNX runtime exports it on first start)")
        manifest = read_manifest(directory)
        self.runtime = select_runtime(directory, runtime, device, dtype, onnx_cache_dir, gpu_assigned, manifest)
        self.fingerprint = self.runtime.fingerprint
        # the `model` block of every API response: which encoder and checkpoint answered
        self.model = {**manifest_summary(manifest), "checkpoint": checkpoint_name(checkpoint)}
        self.metrics = EncoderMetrics()
        self.settings = EncoderSettings()
        # one forward at a time (it uses every thread it is given); calls arriving meanwhile form the next batch
        self._batcher = ContinuousBatcher(self._encode_batch, self.settings.max_batch_size, max_in_flight=1, size=len)
        self._broken: str | None = None  # set when the device fails; check_health then restarts the replica
        self._batches = self._passes = self._texts = self._largest_batch = self._largest_pass = 0
        logger.info(f"Encoder ready: {self.runtime.describe()}")

    def reconfigure(self, user_config: dict) -> None:
        self.settings = EncoderSettings.model_validate(user_config or {})
        self._batcher.configure(max_batch_size=self.settings.max_batch_size)
        if self.settings.threads and self.settings.threads != self.runtime.threads:
            self.runtime.set_threads(self.settings.threads)

    async def encode(self, texts: list[str]) -> EncodedTexts:
        """Texts -> their embeddings (n, embedding_dim) float32, in order, which were truncated, and how many
        tokens of each the encoder read (the tokenizer is here, so token counts come from here too)."""
        if not texts:
            return EncodedTexts(np.zeros((0, self.runtime.embedding_dim), np.float32), [], self.fingerprint, [])
        embeddings, truncated, token_counts = await self._batcher.submit(list(texts))
        return EncodedTexts(embeddings, truncated, self.fingerprint, token_counts)

    async def _encode_batch(self, calls: list[list[str]]) -> list[tuple[np.ndarray, list[bool], list[int]]]:
        """Several calls' texts -> one `encode` (in passes of at most max_batch_size texts and max_batch_tokens
        padded tokens), split back per call. Batch size and latency are recorded per pass."""
        texts = [text for call in calls for text in call]
        batch = await asyncio.to_thread(self._forward, texts)
        self._batches += 1
        self._passes += len(batch.pass_sizes)
        self._texts += len(texts)
        self._largest_batch = max(self._largest_batch, len(texts))
        self._largest_pass = max(self._largest_pass, *batch.pass_sizes)
        for size, seconds in zip(batch.pass_sizes, batch.pass_seconds):
            self.metrics.batch_size.observe(size)
            self.metrics.batch_latency_ms.observe(seconds * 1000)
        self.metrics.texts.inc(len(texts))
        self.metrics.tokens.inc(sum(batch.token_counts))
        if any(batch.truncated):
            self.metrics.truncated.inc(sum(batch.truncated))
        out, offset = [], 0
        for call in calls:
            span = slice(offset, offset + len(call))
            out.append((batch.embeddings[span], batch.truncated[span], batch.token_counts[span]))
            offset += len(call)
        return out

    def _forward(self, texts: list[str]) -> ForwardResult:
        """The blocking part, run in a worker thread."""
        settings = self.settings
        try:
            return self.runtime.encode(
                texts, threads=settings.threads, max_batch=settings.max_batch_size, max_tokens=settings.max_batch_tokens
            )
        except RuntimeError as exc:
            if str(self.runtime.device).startswith("cuda") and "out of memory" not in str(exc):
                self._broken = f"{type(exc).__name__}: {exc}"  # a CUDA error leaves the context unusable: restart
            raise

    def info(self) -> dict:
        """Identity and settings of this replica (the heads compare `fingerprint` at start; the ingress shows
        `model` in its answers)."""
        return {
            **self.runtime.describe(),
            "model": self.model,
            "settings": self.settings.model_dump(),
            "threads": self.runtime.threads,
        }

    def stats(self) -> dict:
        """This replica's counters since it started (tests use them to see batching at work): `batches` gathered
        from concurrent calls and the texts of the largest, forward `passes` and the texts of the largest (1 where
        the runtime runs each text alone: `max_pass_texts`)."""
        return {
            "batches": self._batches,
            "texts": self._texts,
            "largest_batch": self._largest_batch,
            "passes": self._passes,
            "largest_pass": self._largest_pass,
        }

    def ping(self) -> str:
        return "ok"

    def check_health(self) -> None:
        if self._broken:
            raise RuntimeError(f"Encoder device failed: {self._broken}")
