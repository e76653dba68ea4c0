"""Frozen-encoder mode: encode each text once and keep the pooled outputs on disk.

The cache key is the encoder's fingerprint, the max length and the data's hash, so a changed encoder or
changed data never reuses stale vectors.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from multitask.data import MTLDataProcessor, TaskDataset, length_sorted_batches
from multitask.encoder import SentenceEncoder


def cache_path(cache_dir: Path, encoder: SentenceEncoder, dataset: TaskDataset) -> Path:
    return cache_dir / f"{encoder.base_fingerprint}-{encoder.max_length}-{dataset.fingerprint()}.safetensors"


@torch.no_grad()
def cached_pooled_embeddings(
    encoder: SentenceEncoder,
    processor: MTLDataProcessor,
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
    pooled = torch.empty(len(texts), encoder.native_dim)
    batches = length_sorted_batches(texts, batch_size)
    for indices in tqdm(batches, desc=f"encoding {dataset.task} ({len(texts)} texts)", disable=not progress):
        tokens = {k: v.to(device) for k, v in processor.tokenize([texts[i] for i in indices]).items()}
        pooled[indices] = encoder.pool(**tokens).float().cpu()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique: DDP workers may write the same entry
    save_file({"pooled": pooled.contiguous()}, str(tmp))
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry
    return pooled
