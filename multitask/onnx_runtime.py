"""The encoder on CPU through onnxruntime: the same embeddings as `SentenceEncoder`, without importing torch.

    runtime = OnnxEncoderRuntime.load("checkpoints/default", threads=2)   # exports on first use, then cached
    embeddings, truncated = runtime.forward(["a sentence", "another"])     # (2, 1024) float32, [False, False]
    embeddings, truncated, token_counts = runtime.forward_with_token_counts(["a sentence"])   # ..., [4]
    int8 = OnnxEncoderRuntime.load("checkpoints/default", precision="int8")  # dynamic int8, quantized on first use

Measured on the 2-core machine (all-MiniLM-L6-v2, fp32, 2 threads): a single text 2.6 ms vs torch's 7.1 ms,
batches of 8-32 about 2x torch's texts/s; the serving process needs ~400 MB less memory without torch and
transformers. The export (`multitask/onnx_export.py`) needs torch and runs once per checkpoint, in a subprocess,
into a cache directory keyed by the checkpoint's files (`checkpoint_digest`).

`precision="int8"` runs the same export quantized by onnxruntime's dynamic int8 quantization
(`multitask/onnx_export.py`, `quantize_export`), kept beside the float32 file in the same cache directory:
~2x the float32 texts/s on this machine at batches of 1-32, embeddings within cosine 0.967 of float32 (mean 0.9966
over the 2,719 validation texts of the shipped checkpoint), task metrics within 0.005 (README, Performance).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from multitask import errors
from multitask.batching import length_batches
from multitask.errors import CheckpointError
from multitask.manifest import BUNDLE_DIR, CONFIG_FILE, ENCODER_FILE, MODEL_FILE
from multitask.text_window import Tokenized, tokenize_in_window

EXPORT_FORMAT = 1
"""Bump when the exported files change meaning: exports of an older format in a cache are then redone."""
ONNX_FILE, TOKENIZER_FILE, EXPORT_FILE = "encoder.onnx", "tokenizer.json", "export.json"
INT8_ONNX_FILE, INT8_FILE = "encoder.int8.onnx", "int8.json"
INT8_FORMAT = 1
"""Bump when the int8 recipe changes (`onnx_export.quantize_export`): older int8 files in a cache are then redone."""
PRECISIONS = ("float32", "int8")
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "multitask" / "onnx"
EXPORT_TIMEOUT_S = 1800.0
ERROR_PREFIX = "multitask-error: "
"""The export subprocess reports a MultitaskError (e.g. the checkpoint's fingerprint does not match its encoder) on
a stderr line starting with this, so that `ensure_export` raises the same error class in the caller."""


def checkpoint_digest(checkpoint: str | Path) -> str:
    """SHA-256 of the files that define a checkpoint's encoder and projection, plus the export format: an export
    made from other files (a retrained projection, another encoder, other bundled base weights) never matches."""
    directory = Path(checkpoint)
    digest = hashlib.sha256(f"onnx-export-format:{EXPORT_FORMAT}".encode())
    bundled = sorted(p.relative_to(directory).as_posix() for p in (directory / BUNDLE_DIR).rglob("*") if p.is_file())
    for name in (CONFIG_FILE, MODEL_FILE, ENCODER_FILE, *bundled):
        path = directory / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def ensure_export(checkpoint: str | Path, cache_dir: str | Path | None = None, precision: str = "float32") -> Path:
    """The directory holding `checkpoint`'s ONNX export in `cache_dir`, exporting it first (in a subprocess, which
    imports torch and exits) when it is missing or was made from other files. `precision="int8"` also makes sure
    of the quantized file beside it (quantized in the same subprocess, from the float32 file)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    checkpoint = Path(checkpoint)
    digest = checkpoint_digest(checkpoint)
    directory = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / digest[:24]
    if export_digest(directory, precision) == digest:
        return directory
    project_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project_root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "multitask.onnx_export", str(checkpoint), str(directory), "--precision", precision]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CheckpointError(f"Exporting {checkpoint}'s encoder to ONNX took over {EXPORT_TIMEOUT_S:.0f} s.") from exc
    for line in done.stderr.splitlines():
        if line.startswith(ERROR_PREFIX):
            error = json.loads(line.removeprefix(ERROR_PREFIX))
            kind = getattr(errors, error["type"], None)
            kind = kind if isinstance(kind, type) and issubclass(kind, errors.MultitaskError) else CheckpointError
            raise kind(error["message"])
    if done.returncode != 0 or export_digest(directory, precision) != digest:
        raise CheckpointError(
            f"Exporting {checkpoint}'s encoder to ONNX failed (`{' '.join(command)}`, exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}\nServe it with runtime: {'onnx' if precision == 'int8' else 'torch'} "
            "instead, or fix the error above."
        )
    return directory


def export_digest(directory: Path, precision: str = "float32") -> str | None:
    """The `checkpoint_digest` a complete export in `directory` was made from (with `precision="int8"`: one that
    also holds a checked int8 file of the current recipe); None if there is none."""
    try:
        info = json.loads((directory / EXPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    complete = all((directory / name).is_file() for name in (ONNX_FILE, TOKENIZER_FILE))
    if precision == "int8":
        try:  # written before the int8 file is renamed into place, so both present = quantized and checked
            int8 = json.loads((directory / INT8_FILE).read_text())
        except (OSError, ValueError):
            return None
        complete = complete and (directory / INT8_ONNX_FILE).is_file() and int8.get("format") == INT8_FORMAT
    return info.get("checkpoint_digest") if complete and info.get("format") == EXPORT_FORMAT else None


class OnnxEncoderRuntime:
    """An exported encoder (`ensure_export`'s directory) on CPU, turning texts into float32 numpy embeddings;
    `precision` int8 runs the quantized file (weights int8, activations quantized per pass; outputs float32)."""

    device = "cpu"

    def __init__(self, directory: str | Path, threads: int = 0, precision: str = "float32"):
        from tokenizers import Tokenizer

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.dtype = precision
        self.directory = Path(directory)
        self.info = json.loads((self.directory / EXPORT_FILE).read_text())
        self.max_length = int(self.info["max_length"])
        self.tokenizer = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(self.max_length)  # `overflowing` then tells which texts were cut
        self.tokenizer.no_padding()  # padded per pass, to that pass's longest text
        self.threads = -1
        self._session = None
        self.set_threads(threads)

    @classmethod
    def load(
        cls, checkpoint: str | Path, cache_dir: str | Path | None = None, threads: int = 0, precision: str = "float32"
    ) -> OnnxEncoderRuntime:
        return cls(ensure_export(checkpoint, cache_dir, precision), threads, precision)

    @property
    def fingerprint(self) -> str:
        return str(self.info["fingerprint"])

    @property
    def dimension(self) -> int:
        return int(self.info["dimension"])

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
        self._session = ort.InferenceSession(str(self.directory / model), options, providers=["CPUExecutionProvider"])
        self.threads = threads

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

        Tokenized once (long texts only as far as the window reaches: `multitask/text_window.py`), sorted by token
        count and cut into passes of at most `max_batch` texts and `max_tokens` padded tokens (0 = no limit).
        `threads` > 0 different from the session's rebuilds the session first."""
        if threads and threads != self.threads:
            self.set_threads(threads)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out, [], []
        tokenized = tokenize_in_window(list(texts), self.max_length, self._tokenize)
        truncated = [overflowed for _, overflowed in tokenized]
        lengths = [len(ids) for ids, _ in tokenized]
        pad = int(self.info["pad_token_id"])
        session = self._session  # set_threads may swap it meanwhile (from the replica's event loop)
        for rows in length_batches(lengths, max_batch, max_tokens):
            width = max(lengths[i] for i in rows)
            input_ids = np.full((len(rows), width), pad, dtype=np.int64)  # (batch, seq)
            attention_mask = np.zeros((len(rows), width), dtype=np.int64)  # (batch, seq)
            for row, i in enumerate(rows):
                input_ids[row, : lengths[i]] = tokenized[i][0]
                attention_mask[row, : lengths[i]] = 1
            (embeddings,) = session.run(["embeddings"], {"input_ids": input_ids, "attention_mask": attention_mask})
            out[rows] = embeddings  # (batch, embedding_dim)
        return out, truncated, lengths

    def _tokenize(self, texts: list[str]) -> list[Tokenized]:
        return [(encoding.ids, bool(encoding.overflowing)) for encoding in self.tokenizer.encode_batch(texts)]

    def describe(self) -> dict:
        return {
            "encoder": self.info["encoder"],
            "fingerprint": self.fingerprint,
            "device": self.device,
            "dtype": self.dtype,
            "runtime": "onnx",
            "max_length": self.max_length,
            "dimension": self.dimension,
        }
