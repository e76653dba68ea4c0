"""Export a checkpoint's encoder (transformer + mean pooling + projection) to ONNX, for CPU serving without torch.

    python -m multitask.onnx_export checkpoints/default /tmp/encoder-onnx

writes into the output directory:
- `encoder.onnx`: (batch, seq) int64 `input_ids` and `attention_mask` -> (batch, embedding_dim) float32
  `embeddings`, the same function as `SentenceEncoder.forward` (fine-tuned weights merged, fp32);
- `tokenizer.json`: the checkpoint encoder's fast tokenizer (truncation and padding left to the caller);
- `export.json`: `checkpoint_digest` (which checkpoint files it came from), the encoder fingerprint, max length,
  embedding dimension, pad token id.

The export is checked before it is kept: onnxruntime's embeddings of probe texts (short, long, truncated,
padded together) must match torch's within `ATOL`. The directory appears whole (written aside, then renamed),
so concurrent exports of the same checkpoint (two replicas starting) never see half a directory.
The Encoder deployment runs this in a subprocess on first start (`multitask/onnx_runtime.py`), so that the
serving process never imports torch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from multitask.checkpoint import load_encoder
from multitask.errors import CheckpointError, MultitaskError
from multitask.onnx_runtime import (
    ERROR_PREFIX,
    EXPORT_FILE,
    EXPORT_FORMAT,
    ONNX_FILE,
    TOKENIZER_FILE,
    OnnxEncoderRuntime,
    checkpoint_digest,
    export_digest,
)

OPSET = 17
ATOL = 1e-4
_PROBE_TEXTS = [
    "Stocks fell sharply after the announcement.",
    "ok",
    "The new phone ships with a faster chip, a brighter screen and a battery that lasts two days. " * 40,
    "Über-fast trains 🚄 connect the cities; 東京 is two hours away.",
]


def export_encoder(checkpoint: str | Path, out_dir: str | Path) -> dict:
    """Export `checkpoint`'s encoder into `out_dir` (replaced if present); returns the `export.json` contents."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    encoder = load_encoder(checkpoint, "cpu").float().eval()
    backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CheckpointError(
            f"{encoder.config.encoder} has no fast (Rust) tokenizer, which the ONNX runtime needs; serve this "
            "checkpoint with runtime: torch."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        probe = encoder.tokenize(_PROBE_TEXTS)
        with torch.inference_mode(), warnings.catch_warnings():
            # the TorchScript exporter (measured 1.2-1.4x faster in onnxruntime here than the torch.export one)
            # warns about its deprecation and about Python conditions it traces as constants: both harmless
            # for this graph, which the parity check below proves on padded and truncated batches
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder,
                (probe["input_ids"], probe["attention_mask"]),
                str(staging / ONNX_FILE),
                input_names=["input_ids", "attention_mask"],
                output_names=["embeddings"],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                              "embeddings": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )  # fmt: skip
            expected = encoder(**encoder.tokenize(_PROBE_TEXTS[::-1])).numpy()
        tokenizer = type(backend).from_str(backend.to_str())  # a copy: the model's own tokenizer keeps its settings
        tokenizer.no_truncation()
        tokenizer.no_padding()
        tokenizer.save(str(staging / TOKENIZER_FILE))
        info = {
            "format": EXPORT_FORMAT,
            "checkpoint_digest": checkpoint_digest(checkpoint),
            "encoder": encoder.config.encoder,
            "fingerprint": encoder.fingerprint,
            "max_length": int(encoder.max_length),
            "dimension": int(encoder.config.embedding_dim),
            "pad_token_id": int(encoder.tokenizer.pad_token_id or 0),
            "opset": OPSET,
            "torch": torch.__version__,
        }
        (staging / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n")
        _check_parity(staging, _PROBE_TEXTS[::-1], expected)
        if export_digest(out_dir) == info["checkpoint_digest"]:
            return info  # another process (a second replica starting) finished the same export first: keep it
        if out_dir.exists():
            shutil.rmtree(out_dir)  # an incomplete or older-format export
        try:
            staging.rename(out_dir)
        except OSError:  # another process renamed its export there in the meantime
            if export_digest(out_dir) != info["checkpoint_digest"]:
                raise
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_parity(directory: Path, texts: list[str], expected: np.ndarray) -> None:
    """The exported files, run the way serving runs them, must give torch's embeddings."""
    got, _ = OnnxEncoderRuntime(directory, threads=1).forward(texts)
    error = float(np.abs(got - expected).max())
    if error > ATOL:
        raise CheckpointError(
            f"The ONNX export of {directory} differs from torch by {error:.2e} (> {ATOL}); serve with runtime: torch."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint directory")
    parser.add_argument("out_dir", help="output directory (replaced if present)")
    args = parser.parse_args()
    try:
        info = export_encoder(args.checkpoint, args.out_dir)
    except MultitaskError as exc:  # the parent process re-raises it as the same class (`ensure_export`)
        print(ERROR_PREFIX + json.dumps({"type": type(exc).__name__, "message": str(exc)}), file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(info))


if __name__ == "__main__":
    main()
