"""The encoder on torch, on any device and dtype: the Encoder deployment on a GPU (or with `runtime: torch`), and the
in-process model's batched forward (`MultiTaskModel.predict` and `embed`, `evaluate`, training's evaluation and its
embedding cache). Ray-free.

    runtime = select_runtime(checkpoint, runtime="torch")            # loaded for serving (select.py)
    embeddings, truncated = runtime.forward(["a sentence", "another"])   # (2, embedding_dim) float32, [False, False]
    pooled = TorchEncoderRuntime(model.encoder).pooled(texts, max_batch=128)   # before the projection
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from multitask.encoder import SentenceEncoder
from multitask.runtime.base import EncoderRuntime
from multitask.runtime.passes import run_in_passes
from multitask.runtime.text_window import Tokenized, tokenize_in_window


def truncated_flags(encoder: SentenceEncoder, texts: list[str], token_counts: list[int]) -> list[bool]:
    """Which texts were cut to `encoder.max_length` tokens, given each text's token count after truncation. Only
    texts that fill the window are tokenized again, one token further."""
    limit = encoder.max_length
    flags = [False] * len(texts)
    candidates = [i for i, count in enumerate(token_counts) if count >= limit]
    if candidates:
        for i, ids in zip(candidates, encoder.token_ids([texts[i] for i in candidates], max_length=limit + 1)):
            flags[i] = len(ids) > limit
    return flags


class TorchEncoderRuntime(EncoderRuntime):
    """A `SentenceEncoder` as it is: its device, dtype and train/eval mode are the caller's."""

    def __init__(self, encoder: SentenceEncoder):
        self.encoder = encoder

    @property
    def device(self) -> str:
        return str(self._weight.device)

    @property
    def dtype(self) -> str:
        return str(self._weight.dtype).removeprefix("torch.")

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.config.embedding_dim)

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def set_threads(self, threads: int) -> None:
        """torch's intra-op threads of the calling thread (with OpenMP the setting is per thread)."""
        torch.set_num_threads(threads)

    def tokenize(self, texts: list[str]) -> list[Tokenized]:
        ids = self.encoder.token_ids(texts)
        return list(zip(ids, truncated_flags(self.encoder, texts, [len(row) for row in ids])))

    def embed_pass(self, ids: list[list[int]]) -> np.ndarray:
        return self._run_pass(self.encoder, ids)

    def pooled(self, texts: list[str], max_batch: int = 0, progress: str | None = None) -> np.ndarray:
        """(n, native_dim) float32: the transformer's mean-pooled outputs before the projection (frozen training
        caches them), in `encode`'s passes."""
        tokenized = tokenize_in_window(list(texts), self.max_length, self.tokenize)
        run_pass = partial(self._run_pass, self.encoder.pool)
        return run_in_passes(tokenized, run_pass, self.encoder.native_dim, max_batch, progress=progress).embeddings

    def describe(self) -> dict:
        return {
            "encoder": self.encoder.config.encoder,
            "fingerprint": self.fingerprint,
            "device": self.device,
            "dtype": self.dtype,
            "runtime": "torch",
            "max_length": self.max_length,
            "dimension": self.embedding_dim,
        }

    @property
    def _weight(self) -> torch.Tensor:
        return next(self.encoder.transformer.parameters())

    def _run_pass(self, module: torch.nn.Module, ids: list[list[int]]) -> np.ndarray:
        """`module` (input_ids, attention_mask: (batch, seq) -> (batch, width)) on one pass, padded to its longest."""
        batch = self.encoder.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
        device = self._weight.device
        try:
            with torch.inference_mode():
                out = module(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()  # one oversized batch; the runtime stays usable
            raise
        return out.float().cpu().numpy()
