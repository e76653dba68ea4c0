"""A task head evaluated with numpy alone, for processes that should not import torch (the serving heads: torch and
transformers add about 450 MB to each Ray replica). Same weights and the same maths as `multitask.heads.TaskHead`
in eval mode, read from the checkpoint's `model.safetensors`:

    probabilities = softmax((relu(x @ W1.T + b1) @ W2.T + b2) / temperature)

    head = NumpyHead.load("checkpoints/default", "topic", encoder_fingerprint="623b1b2b2099a7e9")
    head.probabilities(embeddings)          # (n, embedding_dim) float32 -> (n, 6)

`check_checkpoint` validates every head by loading it here, the way the head replicas do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multitask.checkpoint.files import check_shapes, read_tensors
from multitask.checkpoint.format import HIDDEN_LAYER, MODEL_FILE, OUTPUT_LAYER, TEMPERATURE, head_prefix, head_shapes
from multitask.checkpoint.manifest import CheckpointManifest, head_spec
from multitask.config import TaskSpec


class NumpyHead:
    """One task's head: Linear -> ReLU -> Linear, calibrated softmax (dropout is a no-op at inference)."""

    def __init__(self, task: TaskSpec, tensors: dict[str, np.ndarray]):
        self.task = task
        self.w1 = np.ascontiguousarray(tensors[f"{HIDDEN_LAYER}.weight"].T, dtype=np.float32)  # (embedding_dim, hidden)
        self.b1 = tensors[f"{HIDDEN_LAYER}.bias"].astype(np.float32)
        self.w2 = np.ascontiguousarray(tensors[f"{OUTPUT_LAYER}.weight"].T, dtype=np.float32)  # (hidden, num_labels)
        self.b2 = tensors[f"{OUTPUT_LAYER}.bias"].astype(np.float32)
        self.temperature = float(tensors[TEMPERATURE])

    @property
    def in_features(self) -> int:
        return self.w1.shape[0]

    @classmethod
    def load(
        cls,
        directory: str | Path,
        task: str,
        encoder_fingerprint: str | None = None,
        manifest: CheckpointManifest | None = None,
    ) -> NumpyHead:
        """`multitask.checkpoint.load.load_head` without torch: one task's weights, every tensor of the shape the
        config says (`manifest`: the checkpoint's, if the caller has read it); with `encoder_fingerprint`, refuse
        heads trained on a different encoder."""
        directory = Path(directory)
        manifest, spec = head_spec(directory, task, encoder_fingerprint, manifest)
        path = directory / MODEL_FILE
        tensors = read_tensors(path, head_prefix(task))
        shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
        check_shapes(path, f"head {task!r}", shapes, head_shapes(spec, manifest.model.embedding_dim))
        return cls(spec, tensors)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, embedding_dim) -> (n, num_labels) calibrated probabilities, float32."""
        hidden = np.maximum(embeddings.astype(np.float32, copy=False) @ self.w1 + self.b1, 0.0)  # (n, hidden)
        logits = (hidden @ self.w2 + self.b2) / self.temperature  # (n, num_labels)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)
