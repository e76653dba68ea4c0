"""The shared encoder deployment: tokenize -> transformer -> mean pool -> projection, with dynamic batching.

Texts from concurrent requests are batched together (`@serve.batch`, one text per batch item, so a batch never
exceeds `max_batch_size` texts). The forward pass runs in a worker thread, so the replica's event loop keeps
accepting requests and fills the next batch meanwhile. Every text is encoded once per request, whatever the number
of heads that read its embedding.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import torch
from ray import serve

from deployments.metrics import EncoderMetrics
from deployments.schemas import EncodedTexts, EncoderSettings
from multitask.checkpoint import load_encoder
from multitask.encoder import SentenceEncoder

logger = logging.getLogger("ray.serve")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(device: str) -> torch.device:
    """`auto` = the GPU Ray gave this replica if any, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but no GPU is visible to this replica; set num_gpus: 1 in its config.")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` = bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU."""
    if dtype != "auto":
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def truncated_flags(encoder: SentenceEncoder, texts: list[str], attention_mask: torch.Tensor) -> list[bool]:
    """Which texts were cut to `encoder.max_length` tokens. Only texts that fill the window are re-tokenized."""
    full = (attention_mask.sum(dim=1) >= encoder.max_length).tolist()  # (batch,) filled the window
    flags = [False] * len(texts)
    candidates = [i for i, filled in enumerate(full) if filled]
    if candidates:
        lengths = encoder.tokenizer(
            [texts[i] for i in candidates], truncation=True, max_length=encoder.max_length + 1
        )["input_ids"]
        for i, ids in zip(candidates, lengths):
            flags[i] = len(ids) > encoder.max_length
    return flags


@serve.deployment(
    name="Encoder",
    ray_actor_options={"num_cpus": 1.0},
    max_ongoing_requests=64,
    max_queued_requests=256,
    user_config=EncoderSettings().model_dump(),
)
class Encoder:
    def __init__(self, checkpoint: str, device: str = "auto", dtype: str = "auto"):
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.encoder = load_encoder(checkpoint, self.device).to(self.dtype).eval()
        self.fingerprint = self.encoder.fingerprint
        self.metrics = EncoderMetrics()
        self.settings = EncoderSettings()
        self._broken: str | None = None  # set when the device fails; check_health then restarts the replica
        self._batches = 0
        self._texts = 0
        self._largest_batch = 0
        logger.info(f"Encoder {self.encoder.config.encoder} on {self.device} ({self.dtype}), fp {self.fingerprint}")

    def reconfigure(self, user_config: dict) -> None:
        self.settings = EncoderSettings.model_validate(user_config or {})
        self._encode_batch.set_max_batch_size(self.settings.max_batch_size)
        self._encode_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)

    async def encode(self, texts: list[str]) -> EncodedTexts:
        """Texts -> their embeddings (n, embedding_dim) float32, in order, and which were truncated."""
        rows = await asyncio.gather(*(self._encode_batch(text) for text in texts))
        embeddings = np.stack([row[0] for row in rows]) if rows else np.zeros((0, self.dimension), np.float32)
        return EncodedTexts(embeddings, [row[1] for row in rows], self.fingerprint)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _encode_batch(self, texts: list[str]) -> list[tuple[np.ndarray, bool]]:
        start = time.perf_counter()
        embeddings, truncated = await asyncio.to_thread(self._forward, texts)
        self._batches += 1
        self._texts += len(texts)
        self._largest_batch = max(self._largest_batch, len(texts))
        self.metrics.batch_size.observe(len(texts))
        self.metrics.batch_latency_ms.observe((time.perf_counter() - start) * 1000)
        self.metrics.texts.inc(len(texts))
        if any(truncated):
            self.metrics.truncated.inc(sum(truncated))
        return list(zip(embeddings, truncated))

    def _forward(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """The blocking part, run in a worker thread: (batch,) texts -> (batch, embedding_dim) float32."""
        threads = self.settings.torch_threads
        if threads and torch.get_num_threads() != threads:  # with OpenMP the setting is per thread: set it here
            torch.set_num_threads(threads)
        batch = self.encoder.tokenize(texts)
        truncated = truncated_flags(self.encoder, texts, batch["attention_mask"])
        try:
            with torch.inference_mode():
                embeddings = self.encoder(**{k: v.to(self.device) for k, v in batch.items()})
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()  # one oversized batch; the replica stays usable
            raise
        except RuntimeError as exc:
            if self.device.type == "cuda":
                self._broken = f"{type(exc).__name__}: {exc}"
            raise
        return embeddings.float().cpu().numpy(), truncated

    @property
    def dimension(self) -> int:
        return int(self.encoder.config.embedding_dim)

    def info(self) -> dict:
        """Identity and settings of this replica (the heads compare `fingerprint` at start)."""
        return {
            "encoder": self.encoder.config.encoder,
            "fingerprint": self.fingerprint,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_length": self.encoder.max_length,
            "dimension": self.dimension,
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
