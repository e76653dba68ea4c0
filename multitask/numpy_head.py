"""A task head evaluated with numpy alone, for processes that should not import torch (the serving heads: torch and
transformers add about 450 MB to each Ray replica). Same weights and the same maths as `multitask.heads.TaskHead`
in eval mode, read from the checkpoint's `model.safetensors`:

    probabilities = softmax((relu(x @ W1.T + b1) @ W2.T + b2) / temperature)

    head = NumpyHead.load("checkpoints/default", "topic", encoder_fingerprint="b987d2a51d8e8322")
    head.probabilities(embeddings)          # (n, embedding_dim) float32 -> (n, 6)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from multitask.config import TaskSpec
from multitask.errors import CheckpointError
from multitask.manifest import MODEL_FILE, head_spec


class NumpyHead:
    """One task's head: Linear -> ReLU -> Linear, calibrated softmax (dropout is a no-op at inference)."""

    def __init__(self, task: TaskSpec, tensors: dict[str, np.ndarray]):
        self.task = task
        self.w1 = np.ascontiguousarray(tensors["net.0.weight"].T, dtype=np.float32)  # (embedding_dim, hidden)
        self.b1 = tensors["net.0.bias"].astype(np.float32)
        self.w2 = np.ascontiguousarray(tensors["net.3.weight"].T, dtype=np.float32)  # (hidden, num_labels)
        self.b2 = tensors["net.3.bias"].astype(np.float32)
        self.temperature = float(tensors.get("temperature", np.float32(1.0)))
        if self.w2.shape[1] != len(task.labels):
            raise CheckpointError(f"Head {task.name!r} has {self.w2.shape[1]} outputs for {len(task.labels)} labels.")

    @property
    def in_features(self) -> int:
        return self.w1.shape[0]

    @classmethod
    def load(cls, directory: str | Path, task: str, encoder_fingerprint: str | None = None) -> NumpyHead:
        """`multitask.checkpoint.load_head` without torch: one task's weights; with `encoder_fingerprint`, refuse
        heads trained on a different encoder."""
        directory = Path(directory)
        _, spec = head_spec(directory, task, encoder_fingerprint)
        path, prefix = directory / MODEL_FILE, f"heads.{task}."
        try:
            with safe_open(str(path), framework="np") as handle:
                names = [key for key in handle.keys() if key.startswith(prefix)]  # noqa: SIM118 - not a dict
                tensors = {key[len(prefix) :]: handle.get_tensor(key) for key in names}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(
                f"{path} is corrupt or not a safetensors file ({exc}); re-save or re-train it."
            ) from exc
        missing = {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"} - set(tensors)
        if missing:
            raise CheckpointError(f"{path} has no {sorted(missing)} for head {task!r}; the checkpoint is incomplete.")
        return cls(spec, tensors)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, embedding_dim) -> (n, num_labels) calibrated probabilities, float32."""
        hidden = np.maximum(embeddings.astype(np.float32, copy=False) @ self.w1 + self.b1, 0.0)  # (n, hidden)
        logits = (hidden @ self.w2 + self.b2) / self.temperature  # (n, num_labels)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)
