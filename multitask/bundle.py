"""Self-contained ("bundled") checkpoints: a copy of a checkpoint that also holds its base encoder's weights and
tokenizer (`base_encoder/`, as `save_pretrained` writes them), so that cluster nodes load it with no model hub and no
pre-filled Hugging Face cache.

    multitask bundle checkpoints/default s3://bucket/multitask/default-bundled

The manifest records `encoder.bundled: true`; `load_encoder` then reads the base encoder from the checkpoint and
still checks both fingerprints (base, and base plus fine-tuned weights), so a bundle whose weights or tokenizer
were altered is refused like any other mismatch. The bundled files count in both digests (multitask/checkpoint/digest.py):
storage's `digest.json` and the ONNX export's key.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from multitask.checkpoint.check import check_checkpoint
from multitask.checkpoint.format import BUNDLE_DIR, CONFIG_FILE, DIGEST_FILE
from multitask.checkpoint.load import load_encoder
from multitask.checkpoint.manifest import CheckpointManifest, check_fingerprint
from multitask.encoder import load_transformer, weights_fingerprint
from multitask.errors import CheckpointError


def bundle_checkpoint(source: str | Path, destination: str | Path) -> CheckpointManifest:
    """Write a bundled copy of the checkpoint in `source` to the new folder `destination` (it appears whole, or not
    at all); returns its manifest. The base encoder bundled is the one `source` loads (from its name, or its own
    bundle), refused unless its fingerprint is the one `source` was trained with."""
    source, destination = Path(source), Path(destination)
    manifest = check_checkpoint(source)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise CheckpointError(f"{destination} exists and is not an empty folder; bundle into a new one.")
    transformer, tokenizer = load_transformer(manifest.model, source / BUNDLE_DIR if manifest.encoder.bundled else None)
    fingerprint = weights_fingerprint(transformer, tokenizer)
    check_fingerprint("base encoder", manifest.encoder.base_fingerprint, fingerprint, manifest.model.encoder, source)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns(DIGEST_FILE, BUNDLE_DIR), dirs_exist_ok=True)
        transformer.save_pretrained(staging / BUNDLE_DIR)
        tokenizer.save_pretrained(staging / BUNDLE_DIR)
        bundled = manifest.model_copy(update={"encoder": manifest.encoder.model_copy(update={"bundled": True})})
        (staging / CONFIG_FILE).write_text(bundled.model_dump_json(indent=2) + "\n")
        check_checkpoint(staging)
        load_encoder(staging)  # the bundle loads on its own and passes both fingerprint checks
        if destination.exists():
            destination.rmdir()  # empty, checked above
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bundled
