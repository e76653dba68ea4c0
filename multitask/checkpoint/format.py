"""What a checkpoint directory holds, by name: its files, and the tensor names inside `model.safetensors`.

    config.json          the manifest (manifest.py): model config, encoder identity, training config, metrics, calibration
    model.safetensors    projection.* and heads.<task>.* (each head loadable on its own)
    encoder.safetensors  LoRA adapters or full encoder weights (only when fine-tuned)
    activation_ranges.json  each encoder Linear's input range on validation texts: the int8 runtime's fixed scales
    base_encoder/        the base encoder's weights and tokenizer (only in a bundle: `multitask bundle`)
    report/              evaluation report written by training (metrics, plots)
    digest.json          every file's size and SHA-256 (written by uploads to storage URIs: multitask/storage.py)

The torch loader (load.py), the torch and numpy heads, the check and the digests all take the names from here.
"""

from __future__ import annotations

from multitask.config import TaskSpec

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
ENCODER_FILE = "encoder.safetensors"
DIGEST_FILE = "digest.json"
ACTIVATION_RANGES_FILE = "activation_ranges.json"
"""Written by training (activation_ranges.py); without it the int8 runtime quantizes activations per pass."""
BUNDLE_DIR = "base_encoder"
"""A bundled checkpoint's copy of the base encoder (weights and tokenizer, as `save_pretrained` writes them)."""
BUNDLE_WEIGHTS_FILE = "model.safetensors"
"""The bundled base encoder's weights (what `save_pretrained` writes), under `BUNDLE_DIR`."""
BUNDLE_TOKENIZER_FILE = "tokenizer_config.json"
"""A file every saved tokenizer has, under `BUNDLE_DIR`."""

PROJECTION_PREFIX = "projection."
"""The shared projection's tensors in `MODEL_FILE`: `projection.weight` and `projection.bias`."""
HIDDEN_LAYER, OUTPUT_LAYER, TEMPERATURE = "net.0", "net.3", "temperature"
"""A head's two linear layers (`TaskHead.net`'s indices) and its calibrated softmax temperature."""


def head_prefix(task: str) -> str:
    """Where one task's head sits in `MODEL_FILE`: `heads.<task>.`."""
    return f"heads.{task}."


def projection_shapes(embedding_dim: int, native_dim: int | None) -> dict[str, tuple[int | None, ...]]:
    """The projection's tensors (under `PROJECTION_PREFIX`) and shapes; `native_dim` None: any input size."""
    return {"weight": (embedding_dim, native_dim), "bias": (embedding_dim,)}


def head_shapes(task: TaskSpec, embedding_dim: int) -> dict[str, tuple[int, ...]]:
    """One head's tensors (under `head_prefix`) and shapes: Linear(embedding_dim, hidden) -> ReLU -> Dropout ->
    Linear(hidden, labels), and the temperature, a scalar."""
    hidden, labels = task.hidden_size, len(task.labels)
    return {
        f"{HIDDEN_LAYER}.weight": (hidden, embedding_dim),
        f"{HIDDEN_LAYER}.bias": (hidden,),
        f"{OUTPUT_LAYER}.weight": (labels, hidden),
        f"{OUTPUT_LAYER}.bias": (labels,),
        TEMPERATURE: (),
    }
