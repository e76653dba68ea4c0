"""A checkpoint's `config.json` (the manifest): how to rebuild the model, which encoder its heads were trained with,
and the record of its training. Torch-free: the ingress and head replicas read it too.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from multitask.checkpoint.format import BUNDLE_DIR, CONFIG_FILE, FORMAT_VERSION
from multitask.config import ModelConfig, TaskSpec
from multitask.errors import CheckpointError, EncoderMismatchError


class FinetuneMode(str, Enum):
    frozen = "frozen"  # encoder weights fixed; pooled embeddings cached on disk; only projection + heads train
    lora = "lora"  # low-rank adapters on the encoder's linear layers train with the heads
    full = "full"  # every encoder weight trains with the heads (large checkpoints)


class LoraSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(default=16, gt=0, description="Adapter rank.")
    alpha: int = Field(default=32, gt=0, description="Adapter scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: tuple[str, ...] = Field(
        default=("query", "key", "value", "dense"), description="Names of the linear layers that get adapters."
    )


class EncoderRecord(BaseModel):
    """Which encoder the heads were trained with."""

    model_config = ConfigDict(extra="forbid")

    name: str
    revision: str | None = None
    base_fingerprint: str = Field(description="Fingerprint of the base encoder's weights and tokenizer.")
    fingerprint: str = Field(description="Fingerprint of the encoder the heads saw: base plus fine-tuned weights.")
    finetune: FinetuneMode = FinetuneMode.frozen
    lora: LoraSpec | None = None
    bundled: bool = Field(
        default=False,
        description=f"The base weights and tokenizer are inside the checkpoint ({BUNDLE_DIR}/, `multitask bundle`): "
        "loading needs no model hub and no Hugging Face cache.",
    )


class CheckpointManifest(BaseModel):
    """The contents of `config.json`."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    model: ModelConfig
    encoder: EncoderRecord
    training: dict[str, Any] = Field(default_factory=dict, description="The training config that produced it.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Evaluation metrics per task and split.")
    calibration: dict[str, Any] = Field(default_factory=dict, description="Per task: temperature, ECE before/after.")


def read_manifest(directory: str | Path) -> CheckpointManifest:
    """Read and validate `config.json`; every failure names the file and what to do."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"Checkpoint directory {directory} does not exist; train one with `multitask train`.")
    missing = f"{directory} is not a checkpoint written by `multitask train`"
    return read_versioned_json(
        directory / CONFIG_FILE, CheckpointManifest, FORMAT_VERSION, missing, "checkpoint config"
    )


Manifest = TypeVar("Manifest", bound=BaseModel)


def read_versioned_json(path: Path, model: type[Manifest], version: int, missing: str, what: str) -> Manifest:
    """A manifest file (a checkpoint's `config.json`, a head artifact's `head.json`) read, validated by `model` and
    its `format_version` checked against `version`; CheckpointError naming the file: `missing` says what a folder
    without it is, `what` names a file that does not validate."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {missing}.")
    try:
        manifest = model.model_validate_json(path.read_text())
    except (ValidationError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a valid {what}: {exc}") from exc
    if manifest.format_version != version:
        raise CheckpointError(
            f"{path} has format_version {manifest.format_version}; this code reads version {version}."
        )
    return manifest


def head_spec(
    directory: str | Path,
    task: str,
    encoder_fingerprint: str | None = None,
    manifest: CheckpointManifest | None = None,
) -> tuple[CheckpointManifest, TaskSpec]:
    """What both head loaders (torch and numpy) check first: the checkpoint's manifest (read, unless the caller has
    it already) and its spec of `task` (an unknown task is a CheckpointError listing the available ones); with
    `encoder_fingerprint`, refuse heads trained on a different encoder (EncoderMismatchError)."""
    directory = Path(directory)
    manifest = manifest or read_manifest(directory)
    try:
        spec = manifest.model.task(task)
    except KeyError as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {exc.args[0]}") from exc
    if encoder_fingerprint is not None:
        check_fingerprint(
            "encoder", manifest.encoder.fingerprint, encoder_fingerprint, manifest.model.encoder, directory
        )
    return manifest, spec


def check_fingerprint(what: str, expected: str, actual: str, encoder_name: str, directory: Path) -> None:
    """Refuse weights trained with another encoder, naming both fingerprints."""
    if expected != actual:
        raise EncoderMismatchError(
            f"Checkpoint {directory} was trained with {what} {encoder_name!r} (fingerprint {expected}), "
            f"but the {what} loaded has fingerprint {actual}. Load the encoder the checkpoint names, "
            f"or retrain the heads on this encoder with `multitask train`."
        )


def manifest_summary(manifest: CheckpointManifest) -> dict[str, Any]:
    """The `model` block of API responses: which encoder and checkpoint answered."""
    return {
        "encoder": manifest.encoder.name,
        "fingerprint": manifest.encoder.fingerprint,
        "finetune": manifest.encoder.finetune.value,
        "embedding_dim": manifest.model.embedding_dim,
    }
