"""The head artifact format: saved and loaded with numpy alone (as a head replica loads it), bound to one encoder
fingerprint, and carried through storage URIs like a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from multitask.checkpoint.format import HIDDEN_LAYER, OUTPUT_LAYER, TEMPERATURE
from multitask.config import TaskSpec
from multitask.errors import CheckpointError, EncoderMismatchError
from multitask.head_artifact import (
    HEAD_FILE,
    HEAD_WEIGHTS_FILE,
    BoundEncoder,
    HeadManifest,
    load_head_artifact,
    save_head_artifact,
)
from multitask.storage import upload_checkpoint

SPEC = TaskSpec(name="news_region", labels=("asia", "europe", "americas"), hidden_size=8)
DIM = 16
FINGERPRINT = "623b1b2b2099a7e9"


def manifest() -> HeadManifest:
    return HeadManifest(
        task=SPEC,
        embedding_dim=DIM,
        dropout=0.1,
        encoder=BoundEncoder(name="embedded:all-MiniLM-L6-v2", fingerprint=FINGERPRINT, checkpoint="ckpt"),
        calibration={"temperature": 1.5},
    )


def tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        f"{HIDDEN_LAYER}.weight": rng.normal(size=(8, DIM)).astype(np.float32),
        f"{HIDDEN_LAYER}.bias": rng.normal(size=8).astype(np.float32),
        f"{OUTPUT_LAYER}.weight": rng.normal(size=(3, 8)).astype(np.float32),
        f"{OUTPUT_LAYER}.bias": rng.normal(size=3).astype(np.float32),
        TEMPERATURE: np.array(1.5, np.float32),
    }


def expected_probabilities(t: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    hidden = np.maximum(x @ t[f"{HIDDEN_LAYER}.weight"].T + t[f"{HIDDEN_LAYER}.bias"], 0)
    logits = (hidden @ t[f"{OUTPUT_LAYER}.weight"].T + t[f"{OUTPUT_LAYER}.bias"]) / t[TEMPERATURE]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_a_saved_head_loads_as_a_numpy_head_with_its_labels_temperature_and_fingerprint(tmp_path):
    weights = tensors()
    save_head_artifact(tmp_path / "head", manifest(), weights)
    assert {p.name for p in (tmp_path / "head").iterdir()} == {HEAD_FILE, HEAD_WEIGHTS_FILE}
    head, labels, temperature, fingerprint, read = load_head_artifact(
        tmp_path / "head", encoder_fingerprint=FINGERPRINT
    )
    assert read == manifest()
    assert labels == SPEC.labels and head.task == SPEC
    assert temperature == pytest.approx(1.5) and fingerprint == FINGERPRINT
    x = np.random.default_rng(1).normal(size=(5, DIM)).astype(np.float32)
    np.testing.assert_allclose(head.probabilities(x), expected_probabilities(weights, x), rtol=1e-5, atol=1e-6)


def test_a_head_bound_to_another_encoder_is_refused_naming_both_fingerprints(tmp_path):
    save_head_artifact(tmp_path / "head", manifest(), tensors())
    with pytest.raises(EncoderMismatchError) as error:
        load_head_artifact(tmp_path / "head", encoder_fingerprint="0123456789abcdef")
    assert FINGERPRINT in str(error.value) and "0123456789abcdef" in str(error.value)
    assert "news_region" in str(error.value)


def test_weights_of_the_wrong_shape_are_refused_on_save_and_on_load(tmp_path):
    bad = tensors()
    bad[f"{OUTPUT_LAYER}.weight"] = np.zeros((4, 8), np.float32)  # 4 labels, the manifest says 3
    with pytest.raises(CheckpointError, match=r"wrong shapes \['net.3.weight \(4, 8\) \(config: \(3, 8\)\)'\]"):
        save_head_artifact(tmp_path / "bad", manifest(), bad)
    save_head_artifact(tmp_path / "head", manifest(), tensors())
    (tmp_path / "head" / HEAD_FILE).write_text(
        manifest().model_copy(update={"embedding_dim": DIM + 1}).model_dump_json()
    )
    with pytest.raises(CheckpointError, match="does not match the model config"):
        load_head_artifact(tmp_path / "head")


def test_a_folder_without_a_head_manifest_is_refused_saying_what_it_is_not(tmp_path):
    with pytest.raises(CheckpointError, match="is not a head artifact written by `multitask add-task`"):
        load_head_artifact(tmp_path)
    (tmp_path / HEAD_FILE).write_text('{"format_version": 1}')
    with pytest.raises(CheckpointError, match="is not a valid head manifest"):
        load_head_artifact(tmp_path)


def test_a_head_travels_through_a_storage_uri_and_loads_from_it(tmp_path):
    save_head_artifact(tmp_path / "head", manifest(), tensors())
    uri = f"file://{tmp_path}/bucket/heads/news_region"
    upload_checkpoint(tmp_path / "head", uri)  # checked as a head, not as a checkpoint
    loaded = load_head_artifact(uri, encoder_fingerprint=FINGERPRINT, cache_dir=tmp_path / "cache")
    assert loaded.labels == SPEC.labels and loaded.fingerprint == FINGERPRINT
    assert any((tmp_path / "cache").iterdir())  # fetched into the cache
    x = np.ones((2, DIM), np.float32)
    np.testing.assert_allclose(loaded.head.probabilities(x), expected_probabilities(tensors(), x), rtol=1e-5)
    with pytest.raises(CheckpointError, match="is not a checkpoint"):  # neither a head nor a checkpoint
        upload_checkpoint(tmp_path / "bucket", f"file://{tmp_path}/elsewhere")
