"""Writing and loading checkpoints with torch: the model's projection and heads, the fine-tuned encoder weights, the
manifest. Heads refuse to load against an encoder whose fingerprint differs from the one they were trained with.

    save_checkpoint(model, "checkpoints/mine", finetune="lora", metrics=...)
    model = load_model("checkpoints/mine")                       # encoder + every head
    head = load_head("checkpoints/mine", "topic", encoder.fingerprint)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from multitask.checkpoint.files import read_tensors
from multitask.checkpoint.format import (
    BUNDLE_DIR,
    CONFIG_FILE,
    ENCODER_FILE,
    MODEL_FILE,
    PROJECTION_PREFIX,
    head_prefix,
)
from multitask.checkpoint.manifest import (
    CheckpointManifest,
    EncoderRecord,
    FinetuneMode,
    LoraSpec,
    check_fingerprint,
    head_spec,
    read_manifest,
)
from multitask.encoder import SentenceEncoder, load_transformer, tensors_digest
from multitask.errors import CheckpointError
from multitask.finetune import apply_encoder_state, encoder_state, lora_spec_of
from multitask.heads import TaskHead
from multitask.model import MultiTaskModel


def effective_fingerprint(base_fingerprint: str, encoder_tensors: dict[str, torch.Tensor]) -> str:
    """The fingerprint of base weights plus a checkpoint's fine-tuned encoder tensors."""
    if not encoder_tensors:
        return base_fingerprint
    digest = tensors_digest(encoder_tensors)
    digest.update(base_fingerprint.encode())
    return digest.hexdigest()[:16]


def save_checkpoint(
    model: MultiTaskModel,
    directory: str | Path,
    finetune: FinetuneMode = FinetuneMode.frozen,
    lora: LoraSpec | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> CheckpointManifest:
    """Write `model` to `directory` (created if needed) and return the manifest written."""
    directory = Path(directory)
    finetune = FinetuneMode(finetune)  # "lora" as a plain string must save adapters, not the full encoder
    encoder = model.encoder
    if finetune is FinetuneMode.lora and lora is None:
        lora = lora_spec_of(encoder.transformer)  # the rank and alpha loading needs, from the adapters themselves
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{PROJECTION_PREFIX}{k}": v for k, v in encoder.projection.state_dict().items()}
    for task, head in model.heads.items():
        tensors.update({f"{head_prefix(task)}{k}": v for k, v in head.state_dict().items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(directory / MODEL_FILE))
    encoder_tensors = encoder_state(encoder.transformer, finetune)
    if encoder_tensors:
        save_file(encoder_tensors, str(directory / ENCODER_FILE))
    else:
        (directory / ENCODER_FILE).unlink(missing_ok=True)
    manifest = CheckpointManifest(
        model=model.config,
        encoder=EncoderRecord(
            name=model.config.encoder,
            revision=model.config.revision,
            base_fingerprint=encoder.base_fingerprint,
            fingerprint=effective_fingerprint(encoder.base_fingerprint, encoder_tensors),
            finetune=finetune,
            lora=lora if finetune is FinetuneMode.lora else None,
        ),
        training=training or {},
        metrics=metrics or {},
        calibration=calibration or {},
    )
    (directory / CONFIG_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_encoder(
    directory: str | Path,
    device: str | torch.device = "cpu",
    merge_lora: bool = True,
    manifest: CheckpointManifest | None = None,
) -> SentenceEncoder:
    """Load the checkpoint's encoder: base transformer (from the checkpoint's own copy in a bundle, else from what
    the config names), fine-tuned weights merged in (LoRA adapters kept apart when `merge_lora` is False), and the
    projection. `manifest`: the checkpoint's, if the caller has read it."""
    directory = Path(directory)
    manifest = manifest or read_manifest(directory)
    bundled = directory / BUNDLE_DIR if manifest.encoder.bundled else None
    transformer, tokenizer = load_transformer(manifest.model, bundled)
    encoder = SentenceEncoder(transformer, tokenizer, manifest.model)
    check_fingerprint(
        "base encoder", manifest.encoder.base_fingerprint, encoder.base_fingerprint, manifest.model.encoder, directory
    )
    encoder_tensors = {}
    if manifest.encoder.finetune is not FinetuneMode.frozen:
        encoder_tensors = read_tensors(directory / ENCODER_FILE, framework="pt")
        try:
            encoder.transformer = apply_encoder_state(
                transformer, manifest.encoder.finetune, manifest.encoder.lora, encoder_tensors, merge=merge_lora
            )
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{directory / ENCODER_FILE} does not fit {manifest.model.encoder}: {exc}") from exc
    encoder.fingerprint = effective_fingerprint(encoder.base_fingerprint, encoder_tensors)
    check_fingerprint(
        "fine-tuned encoder", manifest.encoder.fingerprint, encoder.fingerprint, manifest.model.encoder, directory
    )
    _load_state(encoder.projection, directory / MODEL_FILE, PROJECTION_PREFIX)
    return encoder.to(device).eval()


def load_head(
    directory: str | Path, task: str, encoder_fingerprint: str | None = None, device: str | torch.device = "cpu"
) -> TaskHead:
    """Load one task's head only. With `encoder_fingerprint`, refuse heads trained on a different encoder."""
    directory = Path(directory)
    manifest, spec = head_spec(directory, task, encoder_fingerprint)
    head = TaskHead(spec, manifest.model.embedding_dim, manifest.model.dropout)
    _load_state(head, directory / MODEL_FILE, head_prefix(task))
    return head.to(device).eval()


def load_model(directory: str | Path, device: str | torch.device = "cpu", merge_lora: bool = True) -> MultiTaskModel:
    """Load the whole model (encoder + every head) for in-process use."""
    encoder = load_encoder(directory, device, merge_lora)
    model = MultiTaskModel(encoder)
    for task in model.heads:
        model.heads[task] = load_head(directory, task, encoder.fingerprint, device)
    return model.to(device).eval()


def _load_state(module: torch.nn.Module, path: Path, prefix: str) -> None:
    """The tensors under `prefix` in `path`, loaded strictly into `module`."""
    try:
        module.load_state_dict(read_tensors(path, prefix, framework="pt"), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the model config: {exc}") from exc
