"""The encoder on onnxruntime (the CPU serving path): same embeddings and truncation flags as torch, cached exports,
and the checkpoint's own errors when an export cannot be made."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from multitask.checkpoint.digest import encoder_digest
from multitask.errors import EncoderMismatchError
from multitask.runtime.onnx_cache import ONNX_FILE, ensure_export
from multitask.runtime.onnx_runtime import OnnxEncoderRuntime

TEXTS = [
    "Markets rallied after the vote. " * 40,  # over the 128-token window: truncated
    "Hi.",
    "Über-fast trains 🚄 connect the cities; 東京 is two hours away.",
    "The striker scored twice in the final.",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_runtime(minilm_checkpoint, onnx_cache) -> OnnxEncoderRuntime:
    return OnnxEncoderRuntime.load(minilm_checkpoint, onnx_cache, threads=2)


def test_onnx_runtime_matches_the_in_process_model(onnx_runtime, minilm_model):
    embeddings, truncated = onnx_runtime.forward(TEXTS)
    assert embeddings.dtype == np.float32 and embeddings.shape == (4, 1024)
    assert truncated == [True, False, False, False]
    with torch.inference_mode():
        expected = minilm_model.encoder(**minilm_model.encoder.tokenize(TEXTS)).numpy()
    assert np.abs(embeddings - expected).max() < 1e-4
    assert onnx_runtime.fingerprint == minilm_model.encoder.fingerprint
    assert onnx_runtime.describe()["runtime"] == "onnx" and onnx_runtime.max_length == minilm_model.encoder.max_length


def test_onnx_tokenizer_gives_the_transformers_token_ids(onnx_runtime, minilm_model):
    tokenizer = minilm_model.encoder.tokenizer
    expected = tokenizer(TEXTS, truncation=True, max_length=minilm_model.encoder.max_length)["input_ids"]
    assert [encoding.ids for encoding in onnx_runtime.tokenizer.encode_batch(TEXTS)] == expected


def test_onnx_passes_keep_input_order_and_thread_changes_apply(onnx_runtime):
    whole, whole_truncated = onnx_runtime.forward(TEXTS)
    parts, parts_truncated = onnx_runtime.forward(TEXTS, threads=1, max_batch=2, max_tokens=64)
    assert np.abs(whole - parts).max() < 1e-4 and whole_truncated == parts_truncated
    assert onnx_runtime.threads == 1
    empty, flags = onnx_runtime.forward([])
    assert empty.shape == (0, 1024) and flags == []


def test_exports_are_cached_per_encoder(minilm_checkpoint, onnx_cache, onnx_runtime, tmp_path):
    exported = ensure_export(minilm_checkpoint, onnx_cache)
    assert exported == onnx_runtime.directory
    before = (exported / ONNX_FILE).stat().st_mtime_ns
    assert ensure_export(minilm_checkpoint, onnx_cache) == exported  # no second export
    assert (exported / ONNX_FILE).stat().st_mtime_ns == before
    copy = tmp_path / "ckpt"
    shutil.copytree(minilm_checkpoint, copy)
    weights = load_file(copy / "model.safetensors")
    weights["heads.topic.net.0.weight"] += 1.0  # retrained heads
    save_file(weights, copy / "model.safetensors")
    config = json.loads((copy / "config.json").read_text())
    config["metrics"] = {"retrained": True}
    (copy / "config.json").write_text(json.dumps(config))
    assert ensure_export(copy, onnx_cache) == exported  # other heads and metrics: the same export, not redone
    config["model"]["max_length"] = 64  # anything the encoder is made of: another export
    (copy / "config.json").write_text(json.dumps(config))
    assert encoder_digest(copy) != encoder_digest(minilm_checkpoint)


def test_an_export_refused_by_the_checkpoint_raises_the_checkpoints_error(minilm_checkpoint, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(minilm_checkpoint, copy)
    config = json.loads((copy / "config.json").read_text())
    config["encoder"]["fingerprint"] = "0" * 16
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(EncoderMismatchError, match="0{16}"):
        ensure_export(copy, tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*/encoder.onnx"))  # nothing half-made left behind
