"""Frozen-encoder mode: encode each text once and keep the outputs on disk.

Two kinds of entries: the transformer's mean-pooled outputs (joint frozen training, `cached_pooled_embeddings`, keyed
by the base encoder's fingerprint), and a served runtime's final embeddings (`multitask add-task`,
`cached_runtime_embeddings`, keyed by the runtime's fingerprint and what it is: onnx int8 and float32 differ). Both
keys hold the max length and the data's hash, so a changed encoder or changed data never reuses stale vectors.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from multitask.data import TaskDataset
from multitask.runtime.base import EncoderRuntime

if TYPE_CHECKING:  # transformers (and peft) only where the torch encoder runs: not in add-task's ONNX path
    from multitask.encoder import SentenceEncoder


def cache_path(cache_dir: Path, encoder: SentenceEncoder, dataset: TaskDataset) -> Path:
    return cache_dir / f"{encoder.base_fingerprint}-{encoder.max_length}-{dataset.fingerprint()}.safetensors"


def runtime_cache_path(cache_dir: Path, runtime: EncoderRuntime, dataset: TaskDataset) -> Path:
    """The entry of `runtime`'s embeddings of `dataset`: the runtime's description (fingerprint, runtime, dtype, max
    length) and, for an ONNX runtime, its export's record, hashed into the name."""
    identity = {"describe": runtime.describe(), "export": getattr(runtime, "info", None)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache_dir / f"{runtime.fingerprint}-{runtime.dtype}-{digest}-{dataset.fingerprint()}.safetensors"


def cached_pooled_embeddings(
    encoder: SentenceEncoder,
    dataset: TaskDataset,
    cache_dir: Path,
    device: torch.device,
    batch_size: int = 128,
    progress: bool = True,
) -> torch.Tensor:
    """(n, native_dim) mean-pooled transformer outputs for the dataset's texts, from the cache when present."""

    def compute() -> torch.Tensor:
        from multitask.runtime.torch_runtime import TorchEncoderRuntime

        encoder.transformer.to(device).eval()
        texts = [example.text for example in dataset.examples]
        title = f"encoding {dataset.task} ({len(texts)} texts)" if progress else None
        return torch.from_numpy(TorchEncoderRuntime(encoder).pooled(texts, max_batch=batch_size, progress=title))

    return _cached(cache_path(cache_dir, encoder, dataset), "pooled", compute)


def cached_runtime_embeddings(
    runtime: EncoderRuntime, dataset: TaskDataset, cache_dir: Path, batch_size: int = 32, progress: bool = True
) -> np.ndarray:
    """(n, embedding_dim) float32 embeddings of the dataset's texts through `runtime` (what the Encoder deployment
    serves), from the cache when present."""

    def compute() -> torch.Tensor:
        texts = [example.text for example in dataset.examples]
        title = f"encoding {dataset.source} ({len(texts)} texts)" if progress else None
        return torch.from_numpy(runtime.encode(texts, max_batch=batch_size, progress=title).embeddings)

    return _cached(runtime_cache_path(cache_dir, runtime, dataset), "embeddings", compute).numpy()


def _cached(path: Path, name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    if path.is_file():
        return load_file(str(path))[name]
    tensor = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique: DDP workers may write the same entry
    save_file({name: tensor.contiguous()}, str(tmp))
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry
    return tensor
