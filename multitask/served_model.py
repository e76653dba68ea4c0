"""A checkpoint as the service serves it, in one process and without Ray: the encoder runtime the Encoder deployment
runs (`select_runtime`), the numpy heads the head deployments run (`NumpyHead`) and their results (`label_scores`).

    model = ServedModel.load("checkpoints/default", runtime="onnx-int8")   # what serve_config.local.yaml serves
    model.predict(["the senate passed the budget bill"])   # [{"topic": {"label", "confidence", "scores"}, ...}]
    model.probabilities(model.runtime.forward(texts)[0])   # {task: (n, labels) float32}

The graph tests compare the deployed graph with it (the same runtime, so within the batch-invariance tolerance), and
the benchmarks use it as the in-process baseline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multitask.checkpoint.manifest import read_manifest
from multitask.numpy_head import NumpyHead
from multitask.results import label_scores
from multitask.runtime.base import EncoderRuntime
from multitask.runtime.select import Device, Dtype, Runtime, select_runtime


class ServedModel:
    """An encoder runtime and the heads trained on it (every head's fingerprint checked against the runtime's)."""

    def __init__(self, runtime: EncoderRuntime, heads: dict[str, NumpyHead]):
        self.runtime = runtime
        self.heads = heads

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        runtime: Runtime = "auto",
        device: Device = "auto",
        dtype: Dtype = "auto",
        onnx_cache_dir: str | Path | None = None,
        tasks: list[str] | None = None,
    ) -> ServedModel:
        manifest = read_manifest(checkpoint)
        encoder = select_runtime(checkpoint, runtime, device, dtype, onnx_cache_dir, manifest=manifest)
        names = tasks or manifest.model.task_names
        return cls(encoder, {task: NumpyHead.load(checkpoint, task, encoder.fingerprint, manifest) for task in names})

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def probabilities(self, embeddings: np.ndarray, tasks: list[str] | None = None) -> dict[str, np.ndarray]:
        """(n, embedding_dim) embeddings -> each task's (n, num_labels) calibrated probabilities."""
        return {task: self.heads[task].probabilities(embeddings) for task in tasks or self.tasks}

    def predict(
        self, texts: list[str], tasks: list[str] | None = None, max_batch: int = 0, max_tokens: int = 0
    ) -> list[dict]:
        """Each text's `{task: {label, confidence, scores}}`, in input order, as `/v1/predict` answers them."""
        embeddings, _ = self.runtime.forward(list(texts), max_batch=max_batch, max_tokens=max_tokens)
        per_task = {task: probs.tolist() for task, probs in self.probabilities(embeddings, tasks).items()}
        labels = {task: list(self.heads[task].task.labels) for task in per_task}
        return [
            {task: label_scores(labels[task], rows[i]) for task, rows in per_task.items()} for i in range(len(texts))
        ]
