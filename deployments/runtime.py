"""The encoder's inference logic, free of Ray: device and dtype choice, one batched forward pass, truncation flags.

`deployments/encoder.py` wraps `EncoderRuntime` with Serve's batching, configuration and metrics; tests and the GPU
check use it directly.

    runtime = EncoderRuntime.load("checkpoints/default", device="auto", dtype="auto")
    embeddings, truncated = runtime.forward(["a sentence", "another"])   # (2, 1024) float32, [False, False]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from multitask.batching import length_batches
from multitask.checkpoint import load_encoder
from multitask.encoder import SentenceEncoder
from multitask.text_window import Tokenized, tokenize_in_window

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(device: str) -> torch.device:
    """`auto` = the GPU Ray gave this process if any, else CPU."""
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


def truncated_flags(encoder: SentenceEncoder, texts: list[str], lengths: torch.Tensor) -> list[bool]:
    """Which texts were cut to `encoder.max_length` tokens, given each text's token count after truncation (or
    a (batch, seq) attention mask). Only texts that fill the window are re-tokenized."""
    counts = lengths.sum(dim=1) if lengths.dim() == 2 else lengths
    full = (counts >= encoder.max_length).tolist()  # (batch,) filled the window
    flags = [False] * len(texts)
    candidates = [i for i, filled in enumerate(full) if filled]
    if candidates:
        lengths = encoder.tokenizer([texts[i] for i in candidates], truncation=True, max_length=encoder.max_length + 1)[
            "input_ids"
        ]
        for i, ids in zip(candidates, lengths):
            flags[i] = len(ids) > encoder.max_length
    return flags


class EncoderRuntime:
    """A checkpoint's encoder on one device and dtype, turning texts into float32 numpy embeddings."""

    def __init__(self, encoder: SentenceEncoder, device: torch.device, dtype: torch.dtype):
        self.encoder = encoder.to(device=device, dtype=dtype).eval()
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "auto", dtype: str = "auto") -> EncoderRuntime:
        """Base transformer + the checkpoint's fine-tuned weights + projection, loaded once."""
        chosen = pick_device(device)
        return cls(load_encoder(checkpoint, chosen), chosen, pick_dtype(dtype, chosen))

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def set_threads(self, threads: int) -> None:
        """torch's intra-op threads of the calling thread (`forward` sets them again in its own thread)."""
        torch.set_num_threads(threads)

    @property
    def dimension(self) -> int:
        return int(self.encoder.config.embedding_dim)

    def forward(
        self, texts: list[str], threads: int = 0, max_batch: int = 0, max_tokens: int = 0
    ) -> tuple[np.ndarray, list[bool]]:
        """(n,) texts -> (n, embedding_dim) float32 embeddings and per-text truncation flags, in input order. Blocking."""
        embeddings, truncated, _ = self.forward_with_token_counts(texts, threads, max_batch, max_tokens)
        return embeddings, truncated

    def forward_with_token_counts(
        self, texts: list[str], threads: int = 0, max_batch: int = 0, max_tokens: int = 0
    ) -> tuple[np.ndarray, list[bool], list[int]]:
        """`forward`, plus each text's token count as the encoder read it (truncated, special tokens included).

        The texts are tokenized once (long ones only as far as the window reaches: `multitask/text_window.py`),
        sorted by token count and cut into passes of at most `max_batch` texts and `max_tokens` padded tokens
        (0 = no limit), so that a short text is never padded to a long one's length. `threads` > 0 sets torch's
        intra-op threads for the calling thread first (with OpenMP the setting is per thread, and Serve runs this in
        a worker thread)."""
        if threads and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        encoder = self.encoder
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out, [], []
        tokenized = tokenize_in_window(list(texts), encoder.max_length, self._tokenize)
        ids = [row for row, _ in tokenized]  # unpadded
        for rows in length_batches([len(row) for row in ids], max_batch, max_tokens):
            batch = encoder.tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            try:
                with torch.inference_mode():  # input_ids, attention_mask: (batch, seq) -> (batch, embedding_dim)
                    embeddings = encoder(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()  # one oversized batch; the runtime stays usable
                raise
            out[rows] = embeddings.float().cpu().numpy()
        return out, [overflowed for _, overflowed in tokenized], [len(row) for row in ids]

    def _tokenize(self, texts: list[str]) -> list[Tokenized]:
        encoder = self.encoder
        ids = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
        return list(zip(ids, truncated_flags(encoder, texts, torch.tensor([len(row) for row in ids]))))

    def describe(self) -> dict:
        return {
            "encoder": self.encoder.config.encoder,
            "fingerprint": self.fingerprint,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "runtime": "torch",
            "max_length": self.encoder.max_length,
            "dimension": self.dimension,
        }
