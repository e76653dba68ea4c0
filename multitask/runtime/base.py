"""What an encoder runtime is: a checkpoint's encoder on one device and dtype, turning texts into float32 numpy
embeddings. The torch (`torch_runtime.py`) and onnx (`onnx_runtime.py`) runtimes say only how to tokenize and how to
run one pass; `encode` and `forward`, written once here, do the rest the same way for both.

    batch = runtime.encode(texts, max_batch=32, max_tokens=4096)   # ForwardResult: embeddings, truncated, ...
    embeddings, truncated = runtime.forward(["a sentence", "another"])   # (2, embedding_dim) float32, [False, False]
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from multitask.runtime.passes import ForwardResult, run_in_passes
from multitask.runtime.text_window import Tokenized, tokenize_in_window


class EncoderRuntime(Protocol):
    """Implementations subclass it, to inherit `encode` and `forward`."""

    device: str  # "cpu", "cuda", "cuda:1"
    dtype: str  # "float32", "bfloat16", "float16"; "int8" for the quantized ONNX file
    threads: int  # intra-op threads of the runtime (0: its library's default)
    fingerprint: str  # the fingerprint of the encoder's weights: the checkpoint's heads were trained on it
    embedding_dim: int
    max_length: int  # tokens read per text (special tokens included); longer texts are cut
    max_pass_texts: int = 0
    """The most texts one pass of this runtime may hold (0 = no limit). 1 where a pass's arithmetic depends on its
    batch mates (int8 with one activation scale per pass): each text then runs alone, so its answer is its own."""

    def set_threads(self, threads: int) -> None: ...

    def tokenize(self, texts: list[str]) -> list[Tokenized]:
        """Each text's token ids, cut to `max_length`, and whether it was cut."""
        ...

    def embed_pass(self, ids: list[list[int]]) -> np.ndarray:
        """One forward pass: unpadded token ids -> (len(ids), embedding_dim) float32 embeddings."""
        ...

    def describe(self) -> dict: ...

    def encode(
        self, texts: list[str], threads: int = 0, max_batch: int = 0, max_tokens: int = 0, progress: str | None = None
    ) -> ForwardResult:
        """Texts -> their embeddings, truncation flags and token counts, in input order. Blocking.

        The texts are tokenized once (long ones only as far as the window reaches: `text_window.py`), sorted by token
        count and run in passes of at most `max_batch` texts and `max_tokens` padded tokens (0 = no limit).
        `threads` > 0 sets the runtime's threads first (torch's are per calling thread: Serve runs this in a worker
        thread). A runtime's `max_pass_texts` caps `max_batch`, whatever the caller asks."""
        if threads and threads != self.threads:
            self.set_threads(threads)
        if self.max_pass_texts:
            max_batch = min(max_batch or self.max_pass_texts, self.max_pass_texts)
        tokenized = tokenize_in_window(list(texts), self.max_length, self.tokenize)
        return run_in_passes(tokenized, self.embed_pass, self.embedding_dim, max_batch, max_tokens, progress)

    def forward(
        self, texts: list[str], threads: int = 0, max_batch: int = 0, max_tokens: int = 0
    ) -> tuple[np.ndarray, list[bool]]:
        """`encode`'s (n, embedding_dim) float32 embeddings and per-text truncation flags."""
        batch = self.encode(texts, threads, max_batch, max_tokens)
        return batch.embeddings, batch.truncated
