"""`check_checkpoint`: refuse a bad checkpoint directory before anything serves it, without importing torch.

Deploying (`graph.bind_graph`), uploading, fetching (`multitask/storage.py`) and bundling run it; a fetch may run in
a head or ingress replica, which never imports torch. Heads are checked by loading them with the loader the head
replicas serve them with (`NumpyHead`); the projection and the encoder files from their safetensors headers.
"""

from __future__ import annotations

from pathlib import Path

from multitask.checkpoint.files import check_shapes, require_tensors, tensor_shapes
from multitask.checkpoint.format import (
    BUNDLE_DIR,
    BUNDLE_TOKENIZER_FILE,
    BUNDLE_WEIGHTS_FILE,
    CONFIG_FILE,
    ENCODER_FILE,
    MODEL_FILE,
    PROJECTION_PREFIX,
    projection_shapes,
)
from multitask.checkpoint.manifest import CheckpointManifest, FinetuneMode, read_manifest
from multitask.errors import CheckpointError
from multitask.numpy_head import NumpyHead


def check_checkpoint(checkpoint: str | Path) -> CheckpointManifest:
    """Refuse bad artifacts with CheckpointError naming the file and the fix: a missing directory or config, a config
    that does not validate, missing or corrupt safetensors, heads or projection of the wrong shape, a bundle without
    its encoder files. The encoder's fingerprint needs the transformer itself, so the Encoder replica checks it when
    it loads (EncoderMismatchError, same style); heads then refuse embeddings of any other encoder."""
    directory = Path(checkpoint)
    manifest = read_manifest(directory)
    path = directory / MODEL_FILE
    projection = {
        name.removeprefix(PROJECTION_PREFIX): shape
        for name, shape in tensor_shapes(path).items()
        if name.startswith(PROJECTION_PREFIX)
    }
    if not projection:
        raise CheckpointError(f"{path} holds no projection weights; re-save or re-train it.")
    native_dim = (projection.get("weight") or (None, None))[1]
    check_shapes(path, "projection", projection, projection_shapes(manifest.model.embedding_dim, native_dim))
    for task in manifest.model.task_names:
        NumpyHead.load(directory, task)
    if manifest.encoder.finetune is not FinetuneMode.frozen:
        require_tensors(directory / ENCODER_FILE)  # header only: full fine-tunes are large
    if manifest.encoder.bundled:
        bundle = directory / BUNDLE_DIR
        for name in (CONFIG_FILE, BUNDLE_TOKENIZER_FILE):
            if not (bundle / name).is_file():
                raise CheckpointError(
                    f"{bundle / name} is missing: the bundled encoder is incomplete; bundle the checkpoint again "
                    "with `multitask bundle`."
                )
        require_tensors(bundle / BUNDLE_WEIGHTS_FILE)
    return manifest
