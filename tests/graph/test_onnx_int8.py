"""The int8 encoder (`runtime: onnx-int8`, what the local config and so the graph here serve): close to float32 (the
export's own cosine bound), the same truncation flags and token counts, activation scales fixed from the shipped
checkpoint's activation ranges (so passes of several texts), cached beside the float32 export, and what the deployed
Encoder runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ray import serve

from graph import ENCODER_APP
from multitask.runtime.onnx_cache import INT8_FILE, INT8_ONNX_FILE, ONNX_FILE, ensure_export
from multitask.runtime.onnx_export import INT8_MIN_COSINE
from multitask.runtime.onnx_runtime import OnnxEncoderRuntime

from .helpers import sample_texts

TEXTS = [
    "Markets rallied after the vote. " * 40,  # over the window: truncated
    "Hi.",
    "Über-fast trains 🚄 connect the cities; 東京 is two hours away.",
    *sample_texts(13),
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def runtimes(service) -> tuple[OnnxEncoderRuntime, OnnxEncoderRuntime]:
    """The deployed graph's ONNX cache: its Encoder exported the float32 file and quantized it on first start."""
    return (
        OnnxEncoderRuntime.load(service.checkpoint, service.onnx_cache, threads=2),
        OnnxEncoderRuntime.load(service.checkpoint, service.onnx_cache, threads=2, precision="int8"),
    )


def test_int8_embeddings_stay_within_the_exports_cosine_bound(runtimes):
    float32, int8 = runtimes
    want = float32.encode(TEXTS)
    got = int8.encode(TEXTS, max_batch=4, max_tokens=256)
    assert got.embeddings.dtype == np.float32 and got.embeddings.shape == want.embeddings.shape
    assert cosines(got.embeddings, want.embeddings).min() >= INT8_MIN_COSINE
    assert not np.allclose(got.embeddings, want.embeddings, atol=1e-4)  # really the quantized file
    assert got.truncated == want.truncated and got.truncated[:3] == [True, False, False]
    assert got.token_counts == want.token_counts and max(got.pass_sizes) == 4  # shared passes: fixed scales
    assert int8.describe()["dtype"] == "int8" and int8.fingerprint == float32.fingerprint


def test_the_int8_file_is_cached_beside_the_float32_export(service, runtimes):
    float32, int8 = runtimes
    assert int8.directory == float32.directory and (int8.directory / ONNX_FILE).is_file()
    quantized = int8.directory / INT8_ONNX_FILE
    before = quantized.stat().st_mtime_ns
    assert ensure_export(service.checkpoint, service.onnx_cache, precision="int8") == int8.directory
    assert quantized.stat().st_mtime_ns == before  # not quantized again
    info = json.loads((int8.directory / INT8_FILE).read_text())
    assert info["per_channel"] and info["probe_min_cosine"] >= INT8_MIN_COSINE
    assert (info["activations"], info["why_dynamic"]) == ("static", None)


def test_the_deployed_encoder_serves_int8(service, runtimes):
    """The graph's Encoder runs the static int8 file, in shared passes: its /v1/embed is the int8 runtime's, within
    the cosine bound of float32 and not float32 itself."""
    float32, int8 = runtimes
    texts = TEXTS[:6]
    info = serve.get_deployment_handle("Encoder", app_name=ENCODER_APP).info.remote().result()
    assert (info["runtime"], info["dtype"], info["activations"], info["max_pass_texts"]) == (
        "onnx",
        "int8",
        "static",
        0,
    )
    served = service.post("/v1/embed", json={"texts": texts, "normalize": False}).json()
    got = np.array(served["embeddings"])
    assert np.allclose(got, int8.forward(texts)[0], atol=1e-5)
    assert cosines(got, float32.forward(texts)[0]).min() >= INT8_MIN_COSINE
    assert not np.allclose(got, float32.forward(texts)[0], atol=1e-4)
    assert served["truncated"] == [True, False, False, False, False, False]
