"""The inference core (multitask/runtime/): one batched forward for both runtimes, length-sorted passes, truncation
flags, the one device and dtype choice, and a serving side that never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from multitask.checkpoint.manifest import CheckpointManifest
from multitask.runtime.passes import length_batches
from multitask.runtime.select import pick_device, pick_dtype, select_runtime
from multitask.runtime.torch_runtime import TorchEncoderRuntime, truncated_flags
from multitask.served_model import ServedModel
from tests.support.paths import ROOT, SHIPPED_CHECKPOINT

TEXTS = ["Markets rallied after the vote. " * 40, "Hi.", "The striker scored twice in the final.", "Ok then."]


def reference_embeddings(model, texts: list[str]) -> np.ndarray:
    with torch.inference_mode():
        return model.encoder(**model.encoder.tokenize(texts)).numpy()


def test_length_batches_sort_by_length_and_respect_both_limits():
    lengths = [30, 5, 12, 7, 100, 6]
    batches = length_batches(lengths, max_batch=2, max_tokens=40)
    assert sorted(i for batch in batches for i in batch) == list(range(6))
    assert [[lengths[i] for i in batch] for batch in batches] == [[5, 6], [7, 12], [30], [100]]
    assert length_batches(lengths) == [[1, 5, 3, 2, 0, 4]]  # no limits: one pass, shortest first


def test_truncated_flags_mark_only_texts_over_the_token_limit(minilm_encoder):
    limit = minilm_encoder.max_length
    exactly = " ".join(["word"] * (limit - 2))  # fills the window with [CLS] and [SEP], loses nothing
    texts = ["short", exactly, "word " * (limit * 2)]
    counts = [len(ids) for ids in minilm_encoder.token_ids(texts)]
    assert counts == [3, limit, limit]
    assert truncated_flags(minilm_encoder, texts, counts) == [False, False, True]


def test_token_ids_are_the_padded_batchs_unmasked_ids(minilm_encoder):
    texts = ["short", "a somewhat longer sentence than that", "word " * 600]
    batch = minilm_encoder.tokenize(texts)
    unpadded = [row[mask.bool()].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
    assert minilm_encoder.token_ids(texts) == unpadded


def test_device_and_dtype_choice():
    assert pick_device("cpu") == "cpu" and pick_device("auto", gpu_assigned=False) == "cpu"
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_dtype("auto", "cpu") == "float32" and pick_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ValueError, match="runs on CPU"):
        select_runtime("unused", runtime="onnx", device="cpu", dtype="bfloat16")


def test_torch_runtime_matches_the_in_process_model_in_any_passes(minilm_checkpoint, minilm_model):
    runtime = select_runtime(minilm_checkpoint, runtime="torch", device="cpu")
    assert isinstance(runtime, TorchEncoderRuntime) and runtime.describe()["dtype"] == "float32"
    whole = runtime.encode(TEXTS)
    parts = runtime.encode(TEXTS, max_batch=2, max_tokens=64)
    assert whole.embeddings.dtype == np.float32 and whole.embeddings.shape == (4, 1024)
    assert np.abs(whole.embeddings - reference_embeddings(minilm_model, TEXTS)).max() < 1e-4
    assert np.abs(whole.embeddings - parts.embeddings).max() < 1e-4
    assert whole.truncated == parts.truncated == [True, False, False, False]
    assert whole.token_counts == parts.token_counts and whole.token_counts[0] == runtime.max_length
    assert whole.pass_sizes == [4] and sum(parts.pass_sizes) == 4 and max(parts.pass_sizes) <= 2
    assert runtime.fingerprint == minilm_model.encoder.fingerprint
    empty, flags = runtime.forward([])
    assert empty.shape == (0, 1024) and flags == []


def test_the_in_process_model_runs_through_the_runtime(minilm_model):
    with torch.inference_mode():
        embedded = minilm_model.embed(TEXTS, max_batch=2).numpy()
    assert np.abs(embedded - reference_embeddings(minilm_model, TEXTS)).max() < 1e-4
    pooled = TorchEncoderRuntime(minilm_model.encoder).pooled(TEXTS, max_batch=3)
    with torch.inference_mode():
        expected = minilm_model.encoder.pool(**minilm_model.encoder.tokenize(TEXTS)).numpy()
    assert pooled.shape == (4, minilm_model.encoder.native_dim) and np.abs(pooled - expected).max() < 1e-4


def test_the_serving_side_never_imports_torch():
    """The graph builder, the deployments and the onnx runtime, the check of a checkpoint and its numpy heads: a
    CPU replica runs all of them, and torch, transformers and peft would add hundreds of MB to each."""
    probe = (
        "import sys, graph, deployments.encoder, deployments.head, deployments.ingress, multitask.runtime.select;"
        "from multitask.checkpoint.check import check_checkpoint;"
        "from multitask.checkpoint.digest import encoder_digest;"
        "check_checkpoint('checkpoints/default'); encoder_digest('checkpoints/default');"
        "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    )
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip().splitlines()[-1] == "[]"


def test_the_served_model_reads_its_checkpoint_manifest_once(minilm_checkpoint, shipped_onnx_cache, monkeypatch):
    """What a replica loads (the runtime, its ONNX export's check, every head) takes the manifest it read once,
    as the Encoder and head deployments do."""
    reads: list[str] = []
    validate = CheckpointManifest.model_validate_json

    def counted(cls, data, **kwargs):
        reads.append(cls.__name__)
        return validate(data, **kwargs)

    monkeypatch.setattr(CheckpointManifest, "model_validate_json", classmethod(counted))
    ServedModel.load(minilm_checkpoint, runtime="torch", device="cpu")
    assert reads == ["CheckpointManifest"]
    ServedModel.load(SHIPPED_CHECKPOINT, runtime="onnx-int8", onnx_cache_dir=shipped_onnx_cache)  # exported already
    assert reads == ["CheckpointManifest"] * 2
