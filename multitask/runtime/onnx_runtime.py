"""The encoder on CPU through onnxruntime: the same embeddings as `SentenceEncoder`, without importing torch.

    runtime = OnnxEncoderRuntime.load("checkpoints/default", threads=2)   # exports on first use, then cached
    embeddings, truncated = runtime.forward(["a sentence", "another"])     # (2, embedding_dim) float32, [False, False]
    int8 = OnnxEncoderRuntime.load("checkpoints/default", precision="int8")  # int8, quantized on first use

The serving process needs far less memory without torch and transformers (README, Performance, has the figures).
The export (`onnx_export.py`) runs once per encoder into a cache directory (`onnx_cache.py`). `precision="int8"`
runs the same export quantized to int8 by onnxruntime (`onnx_export.quantize_export`), kept beside the float32
file; its closeness to float32 is checked when it is made.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from multitask.checkpoint.manifest import CheckpointManifest
from multitask.runtime.base import EncoderRuntime
from multitask.runtime.onnx_cache import (
    EXPORT_FILE,
    INT8_FILE,
    INT8_ONNX_FILE,
    ONNX_FILE,
    PRECISIONS,
    TOKENIZER_FILE,
    ensure_export,
)
from multitask.runtime.text_window import Tokenized


class OnnxEncoderRuntime(EncoderRuntime):
    """An exported encoder (`ensure_export`'s directory) on CPU; `precision` int8 runs the quantized file (weights
    int8, activations quantized with fixed scales, or per pass and then one text per pass; outputs float32)."""

    device = "cpu"

    def __init__(
        self,
        directory: str | Path,
        threads: int = 0,
        precision: str = "float32",
        disabled_optimizers: tuple[str, ...] = (),
    ):
        """`disabled_optimizers`: onnxruntime graph optimizers (by name) not to run on the file, e.g. a fusion that
        assumes one activation scale per tensor (bench/int8_alternatives.py); none by default."""
        from tokenizers import Tokenizer

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.dtype = precision
        self.directory = Path(directory)
        self.info = json.loads((self.directory / EXPORT_FILE).read_text())
        self.activations = self._int8_activations() if precision == "int8" else None
        # dynamic int8 (a checkpoint without activation ranges) quantizes each activation with one scale per tensor,
        # i.e. per pass: batch mates and their padding would move a text's answer (by up to 0.33 of confidence).
        # One text per pass keeps it the text's own. Static int8's scales are fixed, and float32 passes invariant
        self.max_pass_texts = 1 if self.activations == "dynamic" else 0
        self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(self.max_length)  # `overflowing` then tells which texts were cut
        self.tokenizer.no_padding()  # padded per pass, to that pass's longest text
        self.threads = -1
        self.disabled_optimizers = list(disabled_optimizers)
        self._session = None
        self.set_threads(threads)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        cache_dir: str | Path | None = None,
        threads: int = 0,
        precision: str = "float32",
        manifest: CheckpointManifest | None = None,
    ) -> OnnxEncoderRuntime:
        return cls(ensure_export(checkpoint, cache_dir, precision, manifest), threads, precision)

    def _int8_activations(self) -> str:
        """How the int8 file quantizes activations, from `int8.json`: "static" (fixed scales) or "dynamic"
        (per pass; also a file without that record)."""
        try:
            return str(json.loads((self.directory / INT8_FILE).read_text()).get("activations", "dynamic"))
        except (OSError, ValueError):
            return "dynamic"

    @property
    def fingerprint(self) -> str:
        return str(self.info["fingerprint"])

    @property
    def embedding_dim(self) -> int:
        return int(self.info["dimension"])

    @property
    def max_length(self) -> int:
        return int(self.info["max_length"])

    def set_threads(self, threads: int) -> None:
        """A new session with `threads` intra-op threads (0 = onnxruntime's default, one per core). Its threads
        sleep between runs instead of spinning: on a few shared cores a spinning pool starves the other replicas."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        model = INT8_ONNX_FILE if self.dtype == "int8" else ONNX_FILE
        self._session = ort.InferenceSession(
            str(self.directory / model),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=self.disabled_optimizers,
        )
        self.threads = threads

    def tokenize(self, texts: list[str]) -> list[Tokenized]:
        return [(encoding.ids, bool(encoding.overflowing)) for encoding in self.tokenizer.encode_batch(texts)]

    def embed_pass(self, ids: list[list[int]]) -> np.ndarray:
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), int(self.info["pad_token_id"]), dtype=np.int64)  # (batch, seq)
        attention_mask = np.zeros((len(ids), width), dtype=np.int64)  # (batch, seq)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        (embeddings,) = self._session.run(["embeddings"], {"input_ids": input_ids, "attention_mask": attention_mask})
        return embeddings  # (batch, embedding_dim)

    def describe(self) -> dict:
        return {
            "encoder": self.info["encoder"],
            "fingerprint": self.fingerprint,
            "device": self.device,
            "dtype": self.dtype,
            "runtime": "onnx",
            "max_length": self.max_length,
            "dimension": self.embedding_dim,
            "max_pass_texts": self.max_pass_texts,
            "activations": self.activations,
        }
