"""Measure the activation ranges a checkpoint's int8 runtime fixes its scales from
(multitask/checkpoint/activation_ranges.py): every encoder Linear's least and greatest input over validation texts,
each text encoded alone (no padding), on the encoder exactly as the ONNX export loads it.

    write_activation_ranges("checkpoints/default", {"topic": topic_texts, "sentiment": sentiment_texts})

Training writes them into every checkpoint it saves (`trainer._save`); `multitask activation-ranges CHECKPOINT`
writes them for a checkpoint trained before, from the validation files its training record names.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from multitask.checkpoint.activation_ranges import ActivationRanges
from multitask.checkpoint.format import ACTIVATION_RANGES_FILE
from multitask.checkpoint.load import load_encoder
from multitask.checkpoint.manifest import read_manifest
from multitask.data import read_task_file
from multitask.encoder import SentenceEncoder
from multitask.errors import CheckpointError

TEXTS_PER_TASK = 512
"""Validation texts per task, evenly spaced through the split: 1,024 for the shipped checkpoint (its two tasks),
which make it batch-invariant over the full test splits at its float32 parity (bench/batch_invariance.py)."""


def calibration_texts(validation: dict[str, list[str]], per_task: int = TEXTS_PER_TASK) -> list[str]:
    """Up to `per_task` texts of each task's validation split, evenly spaced (a split sorted by label or source
    still gives all of it a say)."""
    texts = []
    for task_texts in validation.values():
        count = min(per_task, len(task_texts))
        texts += [task_texts[i * len(task_texts) // count] for i in range(count)]
    return texts


def measure_activation_ranges(
    encoder: SentenceEncoder, texts: list[str], progress: bool = False
) -> dict[str, tuple[float, float]]:
    """Linear module name -> (min, max) of its input over `texts`, each encoded alone. Modules that never run (a
    pooler the embedding does not use) are measured anyway: their ranges are kept and never read."""
    low: dict[str, float] = {}
    high: dict[str, float] = {}

    def recorder(name: str):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            low[name] = min(low.get(name, math.inf), float(inputs[0].min()))
            high[name] = max(high.get(name, -math.inf), float(inputs[0].max()))

        return record

    hooks = [
        module.register_forward_pre_hook(recorder(name))
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        with torch.inference_mode():
            for text in tqdm(texts, desc="activation ranges", unit="text", disable=not progress):
                encoder(**encoder.tokenize([text]))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: (low[name], high[name]) for name in low}


def write_activation_ranges(
    checkpoint: str | Path, validation: dict[str, list[str]], progress: bool = False
) -> ActivationRanges:
    """Measure `checkpoint`'s encoder (loaded as the ONNX export loads it: on the CPU, float32, fine-tuned weights
    merged) on `calibration_texts(validation)` and write its `activation_ranges.json` (whole or not at all)."""
    checkpoint = Path(checkpoint)
    manifest = read_manifest(checkpoint)
    texts = calibration_texts(validation)
    encoder = load_encoder(checkpoint, "cpu", manifest=manifest).float().eval()
    ranges = ActivationRanges(
        fingerprint=manifest.encoder.fingerprint,
        texts=len(texts),
        source=f"validation splits: {', '.join(validation)} (up to {TEXTS_PER_TASK} texts each, evenly spaced)",
        ranges=measure_activation_ranges(encoder, texts, progress),
    )
    handle, staging = tempfile.mkstemp(prefix=f".{ACTIVATION_RANGES_FILE}.", dir=checkpoint)
    with os.fdopen(handle, "w") as file:
        file.write(ranges.model_dump_json(indent=2) + "\n")
    os.chmod(staging, 0o644)  # as the checkpoint's other files (mkstemp makes it private)
    os.replace(staging, checkpoint / ACTIVATION_RANGES_FILE)
    return ranges


def recorded_validation_texts(checkpoint: str | Path) -> dict[str, list[str]]:
    """Each task's validation texts, from the files the checkpoint's training record names (relative to it)."""
    checkpoint = Path(checkpoint)
    manifest = read_manifest(checkpoint)
    files = manifest.training.get("data", {})
    validation = {}
    for task in manifest.model.tasks:
        path = files.get(task.name, {}).get("validation")
        if not path:
            raise CheckpointError(
                f"{checkpoint}'s training record names no validation file for task {task.name!r}; give the "
                "validation files with --validation TASK=FILE."
            )
        validation[task.name] = [e.text for e in read_task_file(checkpoint / path, task).examples]
    return validation
