"""A checkpoint's `activation_ranges.json`: the least and greatest input of each of its encoder's Linear layers over
validation texts, from which the int8 runtime fixes its activation scales (static quantization,
`onnx_export.quantize_export`). Fixed scales make a text's int8 answer its own, whatever shares its pass; without
this file the int8 runtime quantizes activations per pass and so runs one text per pass. Torch-free: the export
reads it; `multitask.training.activation_ranges` measures and writes it.

    {"format_version": 1, "fingerprint": "623b...", "texts": 1024, "source": "validation splits: topic, sentiment",
     "ranges": {"transformer.encoder.layer.0.attention.self.query": [-9.1, 8.7], ...}}
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from multitask.checkpoint.format import ACTIVATION_RANGES_FILE
from multitask.checkpoint.manifest import read_versioned_json

RANGES_FORMAT = 1


class ActivationRanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = RANGES_FORMAT
    fingerprint: str = Field(description="The encoder they were measured on (the manifest's encoder fingerprint).")
    texts: int = Field(gt=0, description="How many texts were encoded, one per pass.")
    source: str = Field(description="Where the texts came from.")
    ranges: dict[str, tuple[float, float]] = Field(
        description="Linear module name in the encoder (as in `SentenceEncoder.named_modules`) -> [min, max] of its "
        "input over the texts' real tokens."
    )


def read_activation_ranges(directory: str | Path) -> ActivationRanges | None:
    """The checkpoint's activation ranges, None if it has none; CheckpointError if the file is not valid."""
    path = Path(directory) / ACTIVATION_RANGES_FILE
    if not path.is_file():
        return None
    return read_versioned_json(path, ActivationRanges, RANGES_FORMAT, "", "activation ranges file")


def activation_ranges_digest(directory: str | Path) -> str | None:
    """SHA-256 of the checkpoint's activation ranges file (None without one): an int8 export records the one it was
    quantized with, so a new file makes a new int8 file."""
    path = Path(directory) / ACTIVATION_RANGES_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
