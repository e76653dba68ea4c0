"""Self-contained ("bundled") checkpoints: the base encoder's weights and tokenizer inside the checkpoint, loaded
without the encoder's package or any hub, giving the same embeddings; tampering refused by the fingerprint checks;
the ONNX export and storage URIs work with them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from multitask.checkpoint.check import check_checkpoint
from multitask.checkpoint.format import BUNDLE_DIR, ENCODER_FILE
from multitask.checkpoint.load import load_encoder, load_model
from multitask.checkpoint.manifest import read_manifest
from multitask.cli import main
from multitask.errors import CheckpointError, EncoderMismatchError
from multitask.storage import locate_checkpoint
from tests.support.paths import SHIPPED_CHECKPOINT  # LoRA: both fingerprints count
from tests.support.s3_server import s3_server

TEXTS = ["The senate passed the budget bill.", "What a wonderful concert!", "ok"]


def embeddings(directory: Path) -> torch.Tensor:
    encoder = load_encoder(directory)
    with torch.inference_mode():
        return encoder(**encoder.tokenize(TEXTS))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    destination = tmp_path_factory.mktemp("bundle") / "default-bundled"
    assert main(["bundle", str(SHIPPED_CHECKPOINT), str(destination)]) == 0
    return destination


def hide_encoder_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded encoder's package (and any hub: HF_HUB_OFFLINE=1) out of reach, as on a bare cluster node."""

    def unavailable(name: str) -> str:
        raise AssertionError(f"loading the bundle looked for encoder {name!r} outside the checkpoint")

    monkeypatch.setattr("multitask.encoder.resolve_encoder_source", unavailable)


@pytest.fixture
def no_encoder_package(monkeypatch):
    hide_encoder_package(monkeypatch)


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle-copy"
    shutil.copytree(bundle, target)
    return target


def test_a_bundle_records_and_holds_its_encoder(bundle):
    manifest = check_checkpoint(bundle)
    assert manifest.encoder.bundled and manifest.encoder.finetune.value == "lora"
    assert (bundle / BUNDLE_DIR / "model.safetensors").is_file() and (bundle / BUNDLE_DIR / "tokenizer.json").is_file()
    assert (bundle / ENCODER_FILE).read_bytes() == (SHIPPED_CHECKPOINT / ENCODER_FILE).read_bytes()
    assert read_manifest(SHIPPED_CHECKPOINT).encoder.bundled is False  # older checkpoints read as not bundled


@pytest.fixture(scope="module")
def plain_embeddings() -> torch.Tensor:
    """The source checkpoint's embeddings, its encoder loaded from the package as usual."""
    return embeddings(SHIPPED_CHECKPOINT)


def test_a_bundle_loads_without_the_encoder_package_and_gives_the_same_embeddings(
    bundle, plain_embeddings, no_encoder_package
):
    with pytest.raises(AssertionError, match="outside the checkpoint"):
        load_encoder(SHIPPED_CHECKPOINT)  # the plain checkpoint does need the package
    torch.testing.assert_close(embeddings(bundle), plain_embeddings, rtol=0, atol=1e-6)
    assert load_model(bundle).predict(TEXTS)[0].keys() == {"topic", "sentiment"}


def test_a_bundle_with_altered_weights_is_refused(bundle, tmp_path, no_encoder_package):
    tampered = copy_of(bundle, tmp_path)
    weights_path = tampered / BUNDLE_DIR / "model.safetensors"
    weights = load_file(weights_path)
    name = next(key for key in weights if key.endswith("attention.self.query.weight"))
    weights[name][0, 0] += 0.5
    save_file(weights, weights_path, metadata={"format": "pt"})
    with pytest.raises(EncoderMismatchError, match="base encoder"):
        load_encoder(tampered)


def test_a_bundle_with_an_altered_tokenizer_is_refused(bundle, tmp_path, no_encoder_package):
    tampered = copy_of(bundle, tmp_path)
    path = tampered / BUNDLE_DIR / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["do_lower_case"] = not config.get("do_lower_case", True)
    path.write_text(json.dumps(config))
    with pytest.raises(EncoderMismatchError, match="base encoder"):
        load_encoder(tampered)


def test_a_bundle_missing_its_encoder_files_fails_the_check(bundle, tmp_path):
    broken = copy_of(bundle, tmp_path)
    (broken / BUNDLE_DIR / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"{BUNDLE_DIR}/model.safetensors is missing"):
        check_checkpoint(broken)


def test_bundling_refuses_a_non_empty_destination(bundle, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["bundle", str(SHIPPED_CHECKPOINT), str(tmp_path / "taken")]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_the_onnx_export_runs_from_a_bundle(bundle, tmp_path):
    from multitask.checkpoint.digest import encoder_digest
    from multitask.runtime.onnx_runtime import OnnxEncoderRuntime

    runtime = OnnxEncoderRuntime.load(bundle, tmp_path / "onnx", threads=2)
    got, _ = runtime.forward(TEXTS)
    np.testing.assert_allclose(got, embeddings(bundle).numpy(), atol=1e-4)
    assert runtime.fingerprint == read_manifest(bundle).encoder.fingerprint
    other = copy_of(bundle, tmp_path)
    (other / BUNDLE_DIR / "tokenizer.json").write_text((other / BUNDLE_DIR / "tokenizer.json").read_text() + " ")
    assert encoder_digest(other) != encoder_digest(bundle)  # the bundled files count in the export's key


def test_cli_bundles_into_storage_and_nodes_load_it_from_there(tmp_path, monkeypatch, capsys):
    with s3_server() as s3:
        uri = s3.create_bucket("bundles") + "/default-bundled"
        assert main(["bundle", str(SHIPPED_CHECKPOINT), uri]) == 0  # where the encoder's package is installed
        assert json.loads(capsys.readouterr().out)["checkpoint"] == uri
        hide_encoder_package(monkeypatch)  # a node without it
        fetched = locate_checkpoint(uri, tmp_path / "cache")
    assert check_checkpoint(fetched).encoder.bundled
    assert load_model(fetched).predict(TEXTS)[1].keys() == {"topic", "sentiment"}
