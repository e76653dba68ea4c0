"""Where a checkpoint's ONNX export is kept, and making it on first use, without importing torch.

    directory = ensure_export("checkpoints/default")                     # ~/.cache/multitask/onnx/<key>/
    directory = ensure_export("checkpoints/default", precision="int8")   # also the quantized file beside it

One directory per encoder, keyed by the checkpoint's `encoder_digest` (multitask/checkpoint/digest.py), so heads
retrained on the same encoder reuse it. The export (`onnx_export.py`) needs torch and runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from multitask import errors
from multitask.checkpoint.activation_ranges import activation_ranges_digest
from multitask.checkpoint.digest import encoder_digest
from multitask.checkpoint.manifest import CheckpointManifest
from multitask.errors import CheckpointError

EXPORT_FORMAT = 2
"""Bump when the exported files, or the key they are filed under, change meaning: older exports are then redone."""
ONNX_FILE, TOKENIZER_FILE, EXPORT_FILE = "encoder.onnx", "tokenizer.json", "export.json"
INT8_ONNX_FILE, INT8_FILE = "encoder.int8.onnx", "int8.json"
INT8_FORMAT = 2
"""Bump when the int8 recipe changes (`onnx_export.quantize_export`): older int8 files in a cache are then redone.
2: static quantization from the checkpoint's activation ranges (dynamic only without them)."""
PRECISIONS = ("float32", "int8")
ONNX_CACHE_DIR = Path.home() / ".cache" / "multitask" / "onnx"
EXPORT_TIMEOUT_S = 1800.0
ERROR_PREFIX = "multitask-error: "
"""The export subprocess reports a MultitaskError (e.g. the checkpoint's fingerprint does not match its encoder) on
a stderr line starting with this, so that `ensure_export` raises the same error class in the caller."""
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
"""The folder that holds the `multitask` package: on the export subprocess's PYTHONPATH."""


def ensure_export(
    checkpoint: str | Path,
    cache_dir: str | Path | None = None,
    precision: str = "float32",
    manifest: CheckpointManifest | None = None,
) -> Path:
    """The directory holding `checkpoint`'s ONNX export in `cache_dir`, exporting it first (in a subprocess, which
    imports torch and exits) when it is missing or was made from another encoder. `precision="int8"` also makes sure
    of the quantized file beside it (quantized in the same subprocess, from the float32 file, with the checkpoint's
    activation ranges: a new ranges file makes a new int8 file). `manifest`: the checkpoint's, if the caller has
    read it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    checkpoint = Path(checkpoint)
    digest = encoder_digest(checkpoint, manifest)
    directory = Path(cache_dir or ONNX_CACHE_DIR).expanduser() / digest[:24]
    ranges = activation_ranges_digest(checkpoint)
    if export_digest(directory, precision, ranges) == digest:
        return directory
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable, "-m", "multitask.runtime.onnx_export", str(checkpoint), str(directory), "--precision", precision
    ]  # fmt: skip
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
    if done.returncode != 0 or export_digest(directory, precision, ranges) != digest:
        raise CheckpointError(
            f"Exporting {checkpoint}'s encoder to ONNX failed (`{' '.join(command)}`, exit {done.returncode}): "
            f"{done.stderr.strip()[-2000:]}\nServe it with runtime: {'onnx' if precision == 'int8' else 'torch'} "
            "instead, or fix the error above."
        )
    return directory


def export_digest(directory: Path, precision: str = "float32", ranges_digest: str | None = None) -> str | None:
    """The `encoder_digest` a complete export in `directory` was made from (with `precision="int8"`: one that also
    holds a checked int8 file of the current recipe, quantized with the activation ranges file of SHA-256
    `ranges_digest`, None: without one); None if there is none."""
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
        complete = complete and int8.get("activation_ranges_sha256") == ranges_digest
    return info.get("encoder_digest") if complete and info.get("format") == EXPORT_FORMAT else None
