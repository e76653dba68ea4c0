"""A head artifact: one task's head trained on the frozen encoder of a served checkpoint (`multitask add-task`),
stored on its own, bound to that encoder's fingerprint. Torch-free: a head replica loads it with numpy.

    head.json          the manifest (HeadManifest): the task (name, labels, hidden size), the encoder it is bound
                       to (name, fingerprint, checkpoint, runtime), how it was trained, metrics, calibration
    head.safetensors   the head's tensors under the checkpoint format's names (net.0.*, net.3.*, temperature;
                       `multitask/checkpoint/format.py`), so `NumpyHead` evaluates it as it does a checkpoint's heads
    report/            metrics.json, report.md, the confusion matrices and training curves (PNG)
    digest.json        written by uploads to storage URIs, as for checkpoints (multitask/storage.py)

    loaded = load_head_artifact("heads/news_region", encoder_fingerprint=encoder.fingerprint)
    loaded.head.probabilities(embeddings)        # (n, embedding_dim) -> (n, num_labels)
    head, labels, temperature, fingerprint, manifest = load_head_artifact("s3://bucket/heads/news_region")

A location is a local path or a storage URI (fetched once per node into the checkpoint cache, like a checkpoint),
so a head deployment can take one in its args. The checkpoint's own jointly trained heads stay in its
`model.safetensors` and load with `NumpyHead.load` as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from multitask.checkpoint.files import check_shapes, read_tensors
from multitask.checkpoint.format import head_shapes
from multitask.checkpoint.manifest import read_versioned_json
from multitask.config import TaskSpec
from multitask.errors import EncoderMismatchError
from multitask.numpy_head import NumpyHead

HEAD_FORMAT_VERSION = 1
HEAD_FILE = "head.json"
HEAD_WEIGHTS_FILE = "head.safetensors"
REPORT_DIR = "report"


class BoundEncoder(BaseModel):
    """The encoder whose embeddings the head was trained on; it classifies only that encoder's embeddings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The encoder's id, e.g. embedded:all-MiniLM-L6-v2.")
    fingerprint: str = Field(description="The served encoder's fingerprint (base plus fine-tuned weights).")
    checkpoint: str = Field(description="The checkpoint the head was trained against, as given.")
    runtime: dict[str, Any] = Field(default_factory=dict, description="The runtime that made the embeddings.")


class HeadManifest(BaseModel):
    """The contents of `head.json`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = HEAD_FORMAT_VERSION
    task: TaskSpec
    embedding_dim: int = Field(gt=0)
    dropout: float = Field(ge=0.0, lt=1.0)
    encoder: BoundEncoder
    training: dict[str, Any] = Field(default_factory=dict, description="Data, settings, epochs, timings.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Headline metrics per split.")
    calibration: dict[str, Any] = Field(default_factory=dict, description="Temperature, ECE before and after.")


class LoadedHead(NamedTuple):
    """What a head replica needs: the numpy head (its `task` has the labels), the values it checks, and the manifest
    it was loaded by (metrics, calibration), read once."""

    head: NumpyHead
    labels: tuple[str, ...]
    temperature: float
    fingerprint: str
    manifest: HeadManifest


def is_head_artifact(directory: str | Path) -> bool:
    return (Path(directory) / HEAD_FILE).is_file()


def save_head_artifact(directory: str | Path, manifest: HeadManifest, tensors: dict[str, np.ndarray]) -> Path:
    """Write `head.json` and `head.safetensors` into `directory` (the report is written beside them by training);
    the tensors are checked against the manifest's shapes first."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    path = directory / HEAD_WEIGHTS_FILE
    shapes = {name: tuple(np.shape(tensor)) for name, tensor in tensors.items()}
    check_shapes(path, f"head {manifest.task.name!r}", shapes, head_shapes(manifest.task, manifest.embedding_dim))
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: np.array(t, dtype=np.float32, order="C") for name, t in tensors.items()}, str(path))
    (directory / HEAD_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    return directory


def read_head_manifest(directory: str | Path) -> HeadManifest:
    """Read and validate `head.json`; every failure names the file and what to do."""
    directory = Path(directory)
    missing = f"{directory} is not a head artifact written by `multitask add-task`"
    return read_versioned_json(directory / HEAD_FILE, HeadManifest, HEAD_FORMAT_VERSION, missing, "head manifest")


def check_head_artifact(directory: str | Path) -> HeadManifest:
    """Refuse a bad head artifact (CheckpointError naming the file): its manifest, and its tensors loaded the way a
    head replica loads them."""
    return _load(Path(directory))[1]


def load_head_artifact(
    location: str | Path, encoder_fingerprint: str | None = None, cache_dir: str | Path | None = None
) -> LoadedHead:
    """The head at `location` (a folder or a storage URI, fetched into `cache_dir`), ready for numpy inference; with
    `encoder_fingerprint` (the live encoder's), refuse a head bound to another encoder (EncoderMismatchError naming
    both fingerprints)."""
    from multitask.storage import locate_checkpoint

    directory = locate_checkpoint(location, cache_dir)
    head, manifest = _load(directory)
    bound = manifest.encoder.fingerprint
    if encoder_fingerprint is not None and encoder_fingerprint != bound:
        raise EncoderMismatchError(
            f"Head artifact {location} (task {manifest.task.name!r}) is bound to encoder {manifest.encoder.name!r} "
            f"with fingerprint {bound}, but the encoder here has fingerprint {encoder_fingerprint}. Train the head "
            f"on this encoder's checkpoint with `multitask add-task {manifest.task.name} --checkpoint ...`."
        )
    return LoadedHead(head, manifest.task.labels, head.temperature, bound, manifest)


def _load(directory: Path) -> tuple[NumpyHead, HeadManifest]:
    manifest = read_head_manifest(directory)
    path = directory / HEAD_WEIGHTS_FILE
    tensors = read_tensors(path)
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    check_shapes(path, f"head {manifest.task.name!r}", shapes, head_shapes(manifest.task, manifest.embedding_dim))
    return NumpyHead(manifest.task, tensors), manifest
