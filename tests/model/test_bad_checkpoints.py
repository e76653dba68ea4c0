"""Bad checkpoints, one table: every missing, corrupt or invalid file is refused, naming the file, by both ways a
checkpoint is read: the graph's check when the app is built (the loaders the replicas serve with) and the in-process
loader (`load_model`: predict, evaluate). Each case damages a copy of the shipped LoRA checkpoint."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors.numpy import load_file, save_file

from graph import EncoderArgs, HeadArgs, build_encoder, build_head
from multitask.checkpoint.check import check_checkpoint
from multitask.checkpoint.format import CONFIG_FILE, ENCODER_FILE, MODEL_FILE
from multitask.checkpoint.load import load_model
from multitask.errors import CheckpointError, EncoderMismatchError
from tests.support.paths import SHIPPED_CHECKPOINT

RESAVE = "re-save or re-train"
INVALID_CONFIG = "not a valid checkpoint config"
NOT_THE_CONFIG = "does not match the model config"


def _write(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _cut(keep: Callable[[int], int]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(path.read_bytes()[: keep(path.stat().st_size)])


def _edit_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        config = json.loads(path.read_text())
        edit(config)
        path.write_text(json.dumps(config))

    return damage


def _heads_against_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit config.json beside the heads' file so that the heads no longer fit it."""
    return lambda path: _edit_config(edit)(path.parent / CONFIG_FILE)


def _drop_tensor(name: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        save_file({key: value for key, value in load_file(path).items() if key != name}, str(path))

    return damage


@dataclass(frozen=True)
class BadCheckpoint:
    name: str
    file: str | None  # the file damaged and named in the error; None: the checkpoint directory itself
    damage: Callable[[Path], None]
    fix: str  # what the graph's error tells the user to do


BAD_CHECKPOINTS = [
    BadCheckpoint("missing checkpoint", None, shutil.rmtree, "does not exist; train one with `multitask train`"),
    BadCheckpoint("missing config", CONFIG_FILE, Path.unlink, "multitask train"),
    BadCheckpoint("config not JSON", CONFIG_FILE, _write(b"{ not json"), INVALID_CONFIG),
    BadCheckpoint("config not an object", CONFIG_FILE, _write(b"[]"), INVALID_CONFIG),
    BadCheckpoint("config missing fields", CONFIG_FILE, _write(b'{"format_version": 1}'), INVALID_CONFIG),
    BadCheckpoint(
        "config with an unknown key", CONFIG_FILE, _edit_config(lambda c: c.update(surprise=True)), INVALID_CONFIG
    ),
    BadCheckpoint(
        "tasks not a list", CONFIG_FILE, _edit_config(lambda c: c["model"].update(tasks="topic")), INVALID_CONFIG
    ),
    BadCheckpoint(
        "future format version",
        CONFIG_FILE,
        _edit_config(lambda c: c.update(format_version=99)),
        "this code reads version",
    ),
    BadCheckpoint("missing weights", MODEL_FILE, Path.unlink, RESAVE),
    BadCheckpoint("empty weights", MODEL_FILE, _write(b""), RESAVE),
    BadCheckpoint("garbage weights", MODEL_FILE, _write(b"\x00garbage, not safetensors" * 10), RESAVE),
    BadCheckpoint("weights cut inside the header", MODEL_FILE, _cut(lambda size: 1000), RESAVE),
    BadCheckpoint("weights cut in half", MODEL_FILE, _cut(lambda size: size // 2), RESAVE),
    BadCheckpoint(
        "bad header length", MODEL_FILE, lambda path: path.write_bytes(b"\xff" * 8 + path.read_bytes()[8:]), RESAVE
    ),
    BadCheckpoint(
        "heads with fewer labels than the config",
        MODEL_FILE,
        _heads_against_config(lambda c: c["model"]["tasks"][0]["labels"].append("Weather")),
        NOT_THE_CONFIG,
    ),
    BadCheckpoint(
        "heads narrower than the config",
        MODEL_FILE,
        _heads_against_config(lambda c: c["model"]["tasks"][0].update(hidden_size=256)),
        NOT_THE_CONFIG,
    ),
    BadCheckpoint(
        "head without its temperature",
        MODEL_FILE,
        _drop_tensor("heads.sentiment.temperature"),
        f"{NOT_THE_CONFIG}: head 'sentiment'",
    ),
    BadCheckpoint("missing adapters", ENCODER_FILE, Path.unlink, RESAVE),
    BadCheckpoint("garbage adapters", ENCODER_FILE, _write(b"\x00garbage, not safetensors" * 10), RESAVE),
]


@pytest.fixture
def checkpoint_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "ckpt"
    shutil.copytree(SHIPPED_CHECKPOINT, directory, ignore=shutil.ignore_patterns("report"))
    return directory


def damaged(directory: Path, case: BadCheckpoint) -> Path:
    """Damage the copy as `case` says; returns the path its error must name."""
    path = directory / case.file if case.file else directory
    case.damage(path)
    return path


@pytest.mark.parametrize("case", BAD_CHECKPOINTS, ids=[case.name for case in BAD_CHECKPOINTS])
def test_the_graph_refuses_to_build_naming_the_file_and_the_fix(checkpoint_copy, case):
    """The encoder application and a head application of the checkpoint both refuse it at deploy time."""
    path = damaged(checkpoint_copy, case)
    for build in (
        lambda: build_encoder(EncoderArgs(checkpoint=str(checkpoint_copy))),
        lambda: build_head(HeadArgs(task="topic", head=str(checkpoint_copy))),
    ):
        with pytest.raises(CheckpointError) as error:
            build()
        assert str(path) in str(error.value) and case.fix in str(error.value)


@pytest.mark.parametrize("case", BAD_CHECKPOINTS, ids=[case.name for case in BAD_CHECKPOINTS])
def test_the_in_process_loader_refuses_naming_the_file(checkpoint_copy, case):
    path = damaged(checkpoint_copy, case)
    with pytest.raises(CheckpointError) as error:
        load_model(checkpoint_copy)
    assert str(path) in str(error.value)


def test_a_good_checkpoint_passes_the_check():
    assert check_checkpoint(SHIPPED_CHECKPOINT).model.task_names == ["topic", "sentiment"]


def test_encoder_deployment_refuses_heads_from_another_encoder(checkpoint_copy, tmp_path):
    """Heads trained against another encoder: the config's fingerprint differs from the encoder loaded. The Encoder
    replica's constructor fails fast (Serve reports the deployment as failed with this message)."""
    from deployments.encoder import Encoder

    _edit_config(lambda config: config["encoder"].update(fingerprint="0" * 16))(checkpoint_copy / CONFIG_FILE)
    with pytest.raises(EncoderMismatchError) as error:
        Encoder.func_or_class(str(checkpoint_copy), "cpu", "float32", onnx_cache_dir=str(tmp_path / "onnx"))
    assert str(checkpoint_copy) in str(error.value) and "0" * 16 in str(error.value)
    assert "retrain the heads" in str(error.value)
