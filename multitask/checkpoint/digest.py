"""What identifies a checkpoint, for the two caches that hold copies of it:

- `file_digests`: every file's size and SHA-256. Storage's fetch cache (multitask/storage.py) verifies each file it
  downloads against them and is keyed by them; an upload writes them to `digest.json`.
- `encoder_digest`: a SHA-256 of only what defines the encoder: its identity in the manifest, the fine-tuned and
  bundled weights, the projection. The ONNX export cache (multitask/runtime/onnx_cache.py) is keyed by it, so
  retraining the heads (or editing metrics) reuses the export, and any change to the encoder makes a new one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from multitask.checkpoint.files import read_tensors
from multitask.checkpoint.format import BUNDLE_DIR, DIGEST_FILE, ENCODER_FILE, MODEL_FILE, PROJECTION_PREFIX
from multitask.checkpoint.manifest import CheckpointManifest, read_manifest

FileDigests = dict[str, dict[str, Any]]
"""Relative POSIX path -> {"size": bytes, "sha256": hex}, for every file of a checkpoint but the digest file."""


def file_digests(directory: Path) -> FileDigests:
    """Size and SHA-256 of every file under `directory` (subfolders too), the digest file excepted."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name != DIGEST_FILE:
            with path.open("rb") as handle:
                sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
            files[name] = {"size": path.stat().st_size, "sha256": sha256}
    return files


def encoder_digest(checkpoint: str | Path, manifest: CheckpointManifest | None = None) -> str:
    """SHA-256 of what makes a checkpoint's encoder (transformer, fine-tuned weights, pooling, projection): the
    manifest's encoder record and model settings but the tasks, the projection tensors, `encoder.safetensors` and
    the bundled base encoder's files. Heads, metrics and the training record are left out. `manifest`: the
    checkpoint's, if the caller has read it."""
    directory = Path(checkpoint)
    manifest = manifest or read_manifest(directory)
    digest = hashlib.sha256()
    digest.update(manifest.encoder.model_dump_json().encode())
    digest.update(manifest.model.model_dump_json(exclude={"tasks", "dropout"}).encode())
    for name, tensor in sorted(read_tensors(directory / MODEL_FILE, PROJECTION_PREFIX).items()):
        digest.update(f"{name}:{tensor.dtype}:{tensor.shape}".encode())
        digest.update(tensor.tobytes())
    bundled = sorted(p.relative_to(directory).as_posix() for p in (directory / BUNDLE_DIR).rglob("*") if p.is_file())
    for name in (ENCODER_FILE, *bundled):
        path = directory / name
        if path.is_file():
            with path.open("rb") as handle:
                digest.update(f"{name}:{hashlib.file_digest(handle, 'sha256').hexdigest()}".encode())
    return digest.hexdigest()
