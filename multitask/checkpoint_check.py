"""`check_checkpoint`: refuse a bad checkpoint directory before anything serves it, without importing torch.

Deploying (`graph.bind_graph`), uploading and fetching (`multitask/storage.py`) run it; a fetch may run in a head or
ingress replica, which never imports torch (about 450 MB per process), so the check reads safetensors headers only:
the tensor names and shapes that `load_head` and `load_encoder` would load strictly, against the config.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError, safe_open

from multitask.errors import CheckpointError
from multitask.manifest import (
    BUNDLE_DIR,
    CONFIG_FILE,
    ENCODER_FILE,
    MODEL_FILE,
    CheckpointManifest,
    FinetuneMode,
    read_manifest,
)

BUNDLE_WEIGHTS_FILE = "model.safetensors"
"""The bundled base encoder's weights (what `save_pretrained` writes), under `BUNDLE_DIR`."""
BUNDLE_TOKENIZER_FILE = "tokenizer_config.json"
"""A file every saved tokenizer has, under `BUNDLE_DIR`."""


def check_checkpoint(checkpoint: str | Path) -> CheckpointManifest:
    """Refuse bad artifacts with CheckpointError naming the file and the fix: a missing directory or config, a config
    that does not validate, missing or corrupt safetensors, heads or projection of the wrong shape, a bundle without
    its encoder files. The encoder's fingerprint needs the transformer itself, so the Encoder replica checks it when
    it loads (EncoderMismatchError, same style); heads then refuse embeddings of any other encoder."""
    directory = Path(checkpoint)
    manifest = read_manifest(directory)
    shapes = safetensors_shapes(directory / MODEL_FILE)
    embedding_dim = manifest.model.embedding_dim
    projection = {name: shape for name, shape in shapes.items() if name.startswith("projection.")}
    if not projection:
        raise CheckpointError(f"{directory / MODEL_FILE} holds no projection weights; re-save or re-train it.")
    native_dim = (projection.get("projection.weight") or (None, None))[1]
    _check_shapes(
        directory / MODEL_FILE,
        "projection",
        projection,
        {"projection.weight": (embedding_dim, native_dim), "projection.bias": (embedding_dim,)},
    )
    for spec in manifest.model.tasks:
        prefix, hidden, labels = f"heads.{spec.name}.", spec.hidden_size, len(spec.labels)
        expected = {
            f"{prefix}net.0.weight": (hidden, embedding_dim),
            f"{prefix}net.0.bias": (hidden,),
            f"{prefix}net.3.weight": (labels, hidden),
            f"{prefix}net.3.bias": (labels,),
            f"{prefix}temperature": (),
        }
        head = {name: shape for name, shape in shapes.items() if name.startswith(prefix)}
        _check_shapes(directory / MODEL_FILE, f"head {spec.name!r}", head, expected)
    if manifest.encoder.finetune is not FinetuneMode.frozen:
        _require_tensors(directory / ENCODER_FILE)  # header only: full fine-tunes are large
    if manifest.encoder.bundled:
        bundle = directory / BUNDLE_DIR
        for name in (CONFIG_FILE, BUNDLE_TOKENIZER_FILE):
            if not (bundle / name).is_file():
                raise CheckpointError(
                    f"{bundle / name} is missing: the bundled encoder is incomplete; bundle the checkpoint again "
                    "with `multitask bundle`."
                )
        _require_tensors(bundle / BUNDLE_WEIGHTS_FILE)
    return manifest


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, from its header (the data is not read; safetensors checks on
    open that the file is as long as the header says)."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, re-save or re-train it.")
    try:
        with safe_open(str(path), framework="np") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({exc}); re-save or re-train it.") from exc


def _require_tensors(path: Path) -> None:
    if not safetensors_shapes(path):
        raise CheckpointError(f"{path} holds no tensors; re-save or re-train the checkpoint.")


def _check_shapes(
    path: Path, what: str, got: dict[str, tuple[int, ...]], expected: dict[str, tuple[int | None, ...]]
) -> None:
    """`got` must hold exactly `expected`'s names, each with its shape (None: any size), as a strict load needs."""
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = [
        f"{name} {got[name]} (config: {want})"
        for name, want in expected.items()
        if name in got
        and (len(got[name]) != len(want) or any(w is not None and g != w for g, w in zip(got[name], want)))
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path} does not match the model config: {what} has missing tensors {missing}, unexpected {unexpected}, "
            f"wrong shapes {wrong}. Re-train the checkpoint, or restore the config.json it was saved with."
        )
