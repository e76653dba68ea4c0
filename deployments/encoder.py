"""The shared encoder deployment: tokenize -> transformer -> mean pool -> projection, with dynamic batching.

On CPU it runs the checkpoint's encoder through onnxruntime (`multitask/onnx_runtime.py`: ~2x torch's speed here
and no torch in the process), exported once per checkpoint on first start (`runtime: onnx-int8`: quantized to int8,
~2x again); on a GPU, or with `runtime: torch`, through torch (`deployments/runtime.py`).

Concurrent `encode` calls are batched continuously (`deployments/batcher.py`): a call that finds the encoder idle
runs at once, calls that arrive during a forward pass form the next one, up to `max_batch_size` texts (the ingress
already sends one call per batch of requests; a larger call runs alone). The gathered texts are tokenized once,
sorted by length and run in passes of at most `max_batch_size` texts and `max_batch_tokens` padded tokens, in a
worker thread, so the replica's event loop keeps accepting requests meanwhile. Every text is encoded once per
request, whatever the number of heads that read its embedding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import ray
from ray import serve

from deployments.batcher import ContinuousBatcher
from deployments.metrics import EncoderMetrics
from deployments.schemas import EncodedTexts, EncoderSettings
from multitask.onnx_runtime import OnnxEncoderRuntime
from multitask.storage import locate_checkpoint

if TYPE_CHECKING:
    from deployments.runtime import EncoderRuntime

logger = logging.getLogger("ray.serve")


@serve.deployment(
    name="Encoder",
    ray_actor_options={"num_cpus": 1.0},
    max_ongoing_requests=64,
    max_queued_requests=256,
    user_config=EncoderSettings().model_dump(),
)
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
        self.runtime = load_runtime(directory, device, dtype, runtime, onnx_cache_dir)
        self.fingerprint = self.runtime.fingerprint
        self.metrics = EncoderMetrics()
        self.settings = EncoderSettings()
        # one forward at a time (it uses every thread it is given); calls arriving meanwhile form the next batch
        self._batcher = ContinuousBatcher(self._encode_batch, self.settings.max_batch_size, max_in_flight=1, size=len)
        self._broken: str | None = None  # set when the device fails; check_health then restarts the replica
        self._batches = 0
        self._texts = 0
        self._largest_batch = 0
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
            return EncodedTexts(np.zeros((0, self.runtime.dimension), np.float32), [], self.fingerprint, [])
        embeddings, truncated, token_counts = await self._batcher.submit(list(texts))
        return EncodedTexts(embeddings, truncated, self.fingerprint, token_counts)

    async def _encode_batch(self, calls: list[list[str]]) -> list[tuple[np.ndarray, list[bool], list[int]]]:
        """Several calls' texts -> one forward (in passes of at most max_batch_size texts), split back per call."""
        texts = [text for call in calls for text in call]
        start = time.perf_counter()
        embeddings, truncated, token_counts = await asyncio.to_thread(self._forward, texts)
        passes = -(-len(texts) // self.settings.max_batch_size)
        self._batches += passes
        self._texts += len(texts)
        self._largest_batch = max(self._largest_batch, min(len(texts), self.settings.max_batch_size))
        self.metrics.batch_size.observe(len(texts))
        self.metrics.batch_latency_ms.observe((time.perf_counter() - start) * 1000)
        self.metrics.texts.inc(len(texts))
        self.metrics.tokens.inc(sum(token_counts))
        if any(truncated):
            self.metrics.truncated.inc(sum(truncated))
        out, offset = [], 0
        for call in calls:
            span = slice(offset, offset + len(call))
            out.append((embeddings[span], truncated[span], token_counts[span]))
            offset += len(call)
        return out

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, list[bool], list[int]]:
        """The blocking part, run in a worker thread: (n,) texts -> (n, embedding_dim) float32."""
        settings = self.settings
        try:
            return self.runtime.forward_with_token_counts(
                texts, threads=settings.threads, max_batch=settings.max_batch_size, max_tokens=settings.max_batch_tokens
            )
        except RuntimeError as exc:
            if str(self.runtime.device).startswith("cuda") and "out of memory" not in str(exc):
                self._broken = f"{type(exc).__name__}: {exc}"  # a CUDA error leaves the context unusable: restart
            raise

    def info(self) -> dict:
        """Identity and settings of this replica (the heads compare `fingerprint` at start)."""
        return {
            **self.runtime.describe(),
            "settings": self.settings.model_dump(),
            "threads": self.runtime.threads,
        }

    def stats(self) -> dict:
        """This replica's counters since it started (tests use them to see batching at work)."""
        return {"batches": self._batches, "texts": self._texts, "largest_batch": self._largest_batch}

    def ping(self) -> str:
        return "ok"

    def check_health(self) -> None:
        if self._broken:
            raise RuntimeError(f"Encoder device failed: {self._broken}")


def load_runtime(
    checkpoint: str, device: str, dtype: str, runtime: str, onnx_cache_dir: str | None
) -> OnnxEncoderRuntime | EncoderRuntime:
    """The encoder's runtime. `device` auto = cuda when Ray gave this replica a GPU, else cpu; `runtime` auto =
    onnx on CPU in float32, torch otherwise; `onnx-int8` = the same export dynamically quantized to int8 (CPU only,
    ~2x onnx float32's texts/s; opt-in where a checkpoint's quality has not been measured with it:
    `bench/quality.py --rows int8`). torch is imported only for the torch runtime."""
    if device == "auto":
        device = "cuda" if ray.get_gpu_ids() and _cuda_usable() else "cpu"
    if runtime == "auto":
        runtime = "onnx" if device == "cpu" and dtype in ("auto", "float32") else "torch"
    if runtime in ("onnx", "onnx-int8"):
        if device != "cpu" or dtype not in ("auto", "float32"):
            raise ValueError(
                f"runtime {runtime} runs on CPU (dtype auto or float32), not {device}/{dtype}; use runtime: torch there."
            )
        precision = "int8" if runtime == "onnx-int8" else "float32"
        logger.info(f"Encoder: onnxruntime {precision} on CPU (exported from {checkpoint} on first start)")
        return OnnxEncoderRuntime.load(checkpoint, onnx_cache_dir, precision=precision)
    from deployments.runtime import EncoderRuntime

    return EncoderRuntime.load(checkpoint, device, dtype)


def _cuda_usable() -> bool:
    """Whether the GPU Ray assigned can be used. A node that declares GPUs without a working CUDA device (a missing
    driver, or `--num-gpus` on a CPU node, as the cluster tests do) serves on CPU with a warning instead of failing
    every replica start."""
    import torch

    if torch.cuda.is_available():
        return True
    logger.warning(f"Ray gave this Encoder GPU ids {ray.get_gpu_ids()}, but torch sees no CUDA device: serving on CPU.")
    return False
