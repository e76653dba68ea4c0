"""Checkpoints: save/load round trips (frozen and LoRA), encoder fingerprint checks, loading one head, and the numpy
head the replicas serve with (missing, corrupt or invalid files: test_bad_checkpoints.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import BertConfig, BertModel

from multitask.checkpoint.format import CONFIG_FILE, ENCODER_FILE, MODEL_FILE, head_shapes
from multitask.checkpoint.load import load_encoder, load_head, load_model, save_checkpoint
from multitask.checkpoint.manifest import read_manifest
from multitask.config import DEFAULT_TASKS, EMBEDDED_ENCODER, ModelConfig
from multitask.encoder import SentenceEncoder, resolve_encoder_source
from multitask.errors import CheckpointError, EncoderMismatchError
from multitask.finetune import FinetuneMode, LoraSpec, add_lora
from multitask.model import MultiTaskModel
from multitask.numpy_head import NumpyHead

TEXTS = ["Parliament passed the budget.", "What a fantastic concert!", "Shares of the chipmaker slid 4%."]


def outputs(model: MultiTaskModel) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with torch.inference_mode():
        out = model(**model.encoder.tokenize(TEXTS), return_embeddings=True)
    return out.embeddings, out.logits


def copy_checkpoint(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "checkpoint"
    shutil.copytree(source, target)
    return target


def edit_config(directory: Path, edit) -> None:
    path = directory / CONFIG_FILE
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def saved_model(minilm_encoder) -> MultiTaskModel:
    """Heads with non-default weights and a calibrated temperature, on the shared encoder."""
    torch.manual_seed(3)
    model = MultiTaskModel(minilm_encoder).eval()
    model.heads["topic"].temperature.fill_(1.7)
    return model


@pytest.fixture(scope="module")
def frozen_checkpoint(saved_model, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("frozen") / "ckpt"
    save_checkpoint(
        saved_model,
        directory,
        training={"epochs": 1},
        metrics={"topic": {"test": {"macro_f1": 0.5}}},
        calibration={"topic": {"temperature": 1.7}},
    )
    return directory


@pytest.fixture(scope="module")
def lora_checkpoint(minilm_config, minilm_encoder, tmp_path_factory):
    """A LoRA checkpoint whose adapters really change the encoder; returns (directory, model, its outputs)."""
    torch.manual_seed(4)
    encoder = SentenceEncoder.load(minilm_config).eval()
    encoder.transformer = add_lora(encoder.transformer, LoraSpec(r=4, alpha=8))
    for name, parameter in encoder.transformer.named_parameters():
        if "lora_B" in name:  # peft initialises B to zero: the adapter would be a no-op
            nn.init.normal_(parameter, std=0.05)
    model = MultiTaskModel(encoder).eval()
    with torch.inference_mode():
        tokens = encoder.tokenize(TEXTS)
        assert not torch.allclose(encoder.pool(**tokens), minilm_encoder.pool(**tokens), atol=1e-3)
    directory = tmp_path_factory.mktemp("lora") / "ckpt"
    save_checkpoint(model, directory, FinetuneMode.lora, LoraSpec(r=4, alpha=8))
    return directory, model, outputs(model)


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A different, tiny local encoder: a random 1-layer BERT with MiniLM's tokenizer."""
    directory = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(5)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    source = Path(resolve_encoder_source(EMBEDDED_ENCODER))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(source / name, directory / name)
    return directory


# --- round trips ---------------------------------------------------------------------------------------------


def test_frozen_round_trip_gives_identical_outputs(saved_model, frozen_checkpoint):
    loaded = load_model(frozen_checkpoint)
    embeddings, logits = outputs(saved_model)
    loaded_embeddings, loaded_logits = outputs(loaded)
    assert torch.equal(loaded_embeddings, embeddings)
    for task in ("topic", "sentiment"):
        assert torch.equal(loaded_logits[task], logits[task])
    assert loaded.heads["topic"].temperature.item() == pytest.approx(1.7)
    assert loaded.predict(TEXTS) == saved_model.predict(TEXTS)


def test_frozen_checkpoint_holds_config_and_small_weights_only(minilm_encoder, frozen_checkpoint):
    assert {p.name for p in frozen_checkpoint.iterdir()} == {CONFIG_FILE, MODEL_FILE}
    manifest = read_manifest(frozen_checkpoint)
    assert manifest.encoder.name == EMBEDDED_ENCODER
    assert manifest.encoder.finetune is FinetuneMode.frozen
    assert manifest.encoder.fingerprint == manifest.encoder.base_fingerprint == minilm_encoder.base_fingerprint
    assert manifest.model.task_names == ["topic", "sentiment"]
    assert manifest.model.task("topic").labels == DEFAULT_TASKS[0].labels
    assert manifest.metrics == {"topic": {"test": {"macro_f1": 0.5}}}
    assert manifest.training == {"epochs": 1}
    assert manifest.calibration == {"topic": {"temperature": 1.7}}
    keys = load_file(frozen_checkpoint / MODEL_FILE).keys()
    assert all(key.startswith(("projection.", "heads.topic.", "heads.sentiment.")) for key in keys)


def assert_same_outputs(model: MultiTaskModel, expected: tuple[torch.Tensor, dict[str, torch.Tensor]]) -> None:
    # LoRA adapters are merged into the base weights at load time: equal up to float rounding
    embeddings, logits = outputs(model)
    torch.testing.assert_close(embeddings, expected[0], atol=1e-5, rtol=0)
    for task in ("topic", "sentiment"):
        torch.testing.assert_close(logits[task], expected[1][task], atol=1e-5, rtol=0)


def test_lora_round_trip_gives_the_same_outputs(lora_checkpoint, minilm_encoder):
    directory, _, expected = lora_checkpoint
    loaded = load_model(directory)
    assert_same_outputs(loaded, expected)
    assert not any("lora" in name for name, _ in loaded.encoder.transformer.named_parameters())
    manifest = read_manifest(directory)
    assert loaded.encoder.fingerprint == manifest.encoder.fingerprint != minilm_encoder.base_fingerprint
    assert loaded.encoder.base_fingerprint == minilm_encoder.base_fingerprint


def test_lora_checkpoint_stores_only_the_adapters_and_their_spec(lora_checkpoint):
    directory, _, _ = lora_checkpoint
    manifest = read_manifest(directory)
    assert manifest.encoder.finetune is FinetuneMode.lora
    assert (manifest.encoder.lora.r, manifest.encoder.lora.alpha) == (4, 8)
    adapters = load_file(directory / ENCODER_FILE)
    assert adapters and all("lora_" in key for key in adapters)
    assert (directory / ENCODER_FILE).stat().st_size < 2_000_000  # the 90 MB base encoder is not copied


def test_lora_mode_by_name_and_without_a_spec_saves_a_loadable_checkpoint(lora_checkpoint, tmp_path):
    _, model, expected = lora_checkpoint
    directory = tmp_path / "by-name"
    save_checkpoint(model, directory, finetune="lora")  # the spec is read from the adapters themselves
    manifest = read_manifest(directory)
    assert manifest.encoder.finetune is FinetuneMode.lora
    assert (manifest.encoder.lora.r, manifest.encoder.lora.alpha) == (4, 8)
    assert (directory / ENCODER_FILE).stat().st_size < 2_000_000
    assert_same_outputs(load_model(directory), expected)


def test_changed_adapter_weights_are_refused(lora_checkpoint, tmp_path):
    directory = copy_checkpoint(lora_checkpoint[0], tmp_path)
    adapters = load_file(directory / ENCODER_FILE)
    save_file({key: tensor * 2 for key, tensor in adapters.items()}, str(directory / ENCODER_FILE))
    with pytest.raises(EncoderMismatchError, match=read_manifest(directory).encoder.fingerprint):
        load_model(directory)


# --- encoder fingerprints ------------------------------------------------------------------------------------


def test_heads_refuse_a_different_encoder_naming_both_fingerprints(frozen_checkpoint, tiny_encoder_dir):
    tiny = SentenceEncoder.load(ModelConfig(encoder=str(tiny_encoder_dir), tasks=DEFAULT_TASKS))
    expected = read_manifest(frozen_checkpoint).encoder.fingerprint
    assert tiny.fingerprint != expected
    with pytest.raises(EncoderMismatchError) as error:
        load_head(frozen_checkpoint, "topic", encoder_fingerprint=tiny.fingerprint)
    message = str(error.value)
    assert expected in message and tiny.fingerprint in message and EMBEDDED_ENCODER in message


def test_checkpoint_whose_encoder_folder_now_holds_another_model_is_refused(
    frozen_checkpoint, tiny_encoder_dir, tmp_path
):
    directory = copy_checkpoint(frozen_checkpoint, tmp_path)
    expected = read_manifest(directory).encoder.base_fingerprint

    def point_at_tiny(config):
        config["model"]["encoder"] = str(tiny_encoder_dir)
        config["encoder"]["name"] = str(tiny_encoder_dir)

    edit_config(directory, point_at_tiny)
    tiny_fingerprint = SentenceEncoder.load(ModelConfig(encoder=str(tiny_encoder_dir), tasks=DEFAULT_TASKS)).fingerprint
    with pytest.raises(EncoderMismatchError) as error:
        load_model(directory)
    message = str(error.value)
    assert expected in message and tiny_fingerprint in message and str(tiny_encoder_dir) in message


def test_edited_base_fingerprint_is_refused(frozen_checkpoint, minilm_encoder, tmp_path):
    directory = copy_checkpoint(frozen_checkpoint, tmp_path)
    edit_config(directory, lambda config: config["encoder"].update(base_fingerprint="0123456789abcdef"))
    with pytest.raises(EncoderMismatchError) as error:
        load_encoder(directory)
    assert "0123456789abcdef" in str(error.value) and minilm_encoder.base_fingerprint in str(error.value)


def test_edited_heads_fingerprint_is_refused(frozen_checkpoint, minilm_encoder, tmp_path):
    directory = copy_checkpoint(frozen_checkpoint, tmp_path)
    edit_config(directory, lambda config: config["encoder"].update(fingerprint="fedcba9876543210"))
    with pytest.raises(EncoderMismatchError) as error:
        load_model(directory)
    assert "fedcba9876543210" in str(error.value) and minilm_encoder.fingerprint in str(error.value)


# --- loading one head ----------------------------------------------------------------------------------------


def test_load_head_loads_only_its_own_head(saved_model, frozen_checkpoint, tmp_path):
    directory = copy_checkpoint(frozen_checkpoint, tmp_path)
    tensors = load_file(directory / MODEL_FILE)
    save_file({k: v for k, v in tensors.items() if not k.startswith("heads.sentiment.")}, str(directory / MODEL_FILE))

    head = load_head(directory, "topic", encoder_fingerprint=saved_model.encoder.fingerprint)
    assert head.task.name == "topic" and not head.training
    expected = saved_model.heads["topic"].state_dict()
    assert head.state_dict().keys() == expected.keys()
    for key, tensor in head.state_dict().items():
        assert torch.equal(tensor, expected[key])
    with pytest.raises(CheckpointError, match=re.escape(str(directory / MODEL_FILE))):
        load_head(directory, "sentiment")


def test_load_head_checks_the_fingerprint_when_given_one(frozen_checkpoint, minilm_encoder):
    assert load_head(frozen_checkpoint, "sentiment", encoder_fingerprint=minilm_encoder.fingerprint)
    with pytest.raises(EncoderMismatchError, match="0000000000000000"):
        load_head(frozen_checkpoint, "sentiment", encoder_fingerprint="0000000000000000")


def test_load_head_of_an_unknown_task_lists_the_tasks(frozen_checkpoint):
    with pytest.raises(CheckpointError, match=r"No task 'emotion'.*\['topic', 'sentiment'\]"):
        load_head(frozen_checkpoint, "emotion")


def test_the_torch_head_has_the_tensors_the_format_names(saved_model):
    """The numpy head and the check read heads by `head_shapes`; `TaskHead` must save exactly those."""
    for head in saved_model.heads.values():
        saved = {name: tuple(tensor.shape) for name, tensor in head.state_dict().items()}
        assert saved == head_shapes(head.task, saved_model.config.embedding_dim)


def test_numpy_head_matches_the_torch_head_and_checks_the_fingerprint(saved_model, frozen_checkpoint):
    fingerprint = read_manifest(frozen_checkpoint).encoder.fingerprint
    x = np.random.default_rng(0).normal(size=(4, 1024)).astype(np.float32)
    for task, torch_head in saved_model.heads.items():
        head = NumpyHead.load(frozen_checkpoint, task, fingerprint)
        with torch.inference_mode():
            expected = torch_head.probabilities(torch.from_numpy(x)).numpy()
        assert abs(head.probabilities(x) - expected).max() < 1e-5
    with pytest.raises(EncoderMismatchError):
        NumpyHead.load(frozen_checkpoint, "topic", "0" * 16)
