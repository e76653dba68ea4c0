"""Frozen-encoder mode: encode each text once and keep the pooled outputs on disk.

The cache key is the encoder's fingerprint, the max length and the data's hash, so a changed encoder or
changed data never reuses stale vectors.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from multitask.data import TaskDataset
from multitask.encoder import SentenceEncoder
from multitask.runtime.torch_runtime import TorchEncoderRuntime


def cache_path(cache_dir: Path, encoder: SentenceEncoder, dataset: TaskDataset) -> Path:
    return cache_dir / f"{encoder.base_fingerprint}-{encoder.max_length}-{dataset.fingerprint()}.safetensors"


def cached_pooled_embeddings(
    encoder: SentenceEncoder,
    dataset: TaskDataset,
    cache_dir: Path,
    device: torch.device,
    batch_size: int = 128,
    progress: bool = True,
) -> torch.Tensor:
    """(n, native_dim) mean-pooled transformer outputs for the dataset's texts, from the cache when present."""
    path = cache_path(cache_dir, encoder, dataset)
    if path.is_file():
        return load_file(str(path))["pooled"]
    encoder.transformer.to(device).eval()
    texts = [example.text for example in dataset.examples]
    title = f"encoding {dataset.task} ({len(texts)} texts)" if progress else None
    pooled = torch.from_numpy(TorchEncoderRuntime(encoder).pooled(texts, max_batch=batch_size, progress=title))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique: DDP workers may write the same entry
    save_file({"pooled": pooled.contiguous()}, str(tmp))
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry
    return pooled
