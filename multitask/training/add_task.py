"""A new task's head, trained on the frozen encoder of a served checkpoint: `multitask add-task`.

    multitask add-task news_region --data regions.csv --checkpoint checkpoints/default --output heads/news_region

The texts are embedded once through the runtime the Encoder deployment serves with (`select_runtime`; the local
config's `onnx-int8` by default), cached on disk (`embedding_cache.py`). The head is the design's MLP
(`multitask.heads.TaskHead`), trained with AdamW on those embeddings; after each epoch it is scored on the validation
split (the `--validation` file, else a stratified share held out of the data), and the best epoch is kept (early
stopping). A softmax temperature is fitted on validation (`calibration.py`), and the head artifact is written:
weights, labels, the encoder fingerprint, metrics, calibration and a report (`multitask/head_artifact.py`).
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from multitask.checkpoint.manifest import read_manifest
from multitask.config import TaskSpec
from multitask.data import TaskDataset, file_labels, read_task_file
from multitask.errors import DataError, MultitaskError
from multitask.head_artifact import REPORT_DIR, BoundEncoder, HeadManifest, save_head_artifact
from multitask.heads import TaskHead
from multitask.runtime.select import Runtime, select_runtime
from multitask.storage import fetch_file, is_uri, locate_checkpoint
from multitask.task_names import check_task_name
from multitask.training.calibration import fit_temperature
from multitask.training.class_weights import ClassWeighting, class_weights
from multitask.training.embedding_cache import cached_runtime_embeddings
from multitask.training.metrics import classification_metrics, expected_calibration_error
from multitask.training.report import write_report

MIN_EXAMPLES_PER_LABEL = 8
"""Fewer leave too little to hold out a validation example per label and still learn the label."""
HEADLINE = ("examples", "accuracy", "macro_f1", "macro_recall", "ece")


class AddTaskSettings(BaseModel):
    """How a new head is trained; the defaults are what `multitask add-task` uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden_size: int = Field(default=512, gt=0, description="The head's hidden width (the checkpoint heads': 512).")
    batch_size: int = Field(default=64, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    max_epochs: int = Field(default=60, gt=0, description="Upper bound; early stopping usually ends sooner.")
    min_steps_per_epoch: int = Field(
        default=20, gt=0, description="A small data set's epoch is this many steps, so validation is not every step."
    )
    patience: int = Field(default=5, ge=1, description="Epochs without a validation gain before stopping.")
    validation_share: float = Field(
        default=0.2, gt=0, lt=1, description="Share of each label held out for validation when no file is given."
    )
    class_weighting: ClassWeighting = Field(default=ClassWeighting.sqrt, description="As the joint training's.")
    seed: int = 13
    runtime: Runtime = Field(default="onnx-int8", description="The Encoder's runtime (serve_config.local.yaml's).")
    threads: int = Field(
        default=1, ge=0, description="Encoder and torch threads (0: every core; 1 was faster on 2 shared cores)."
    )
    embed_batch_size: int = Field(default=32, gt=0, description="Texts per encoder pass (length-sorted).")
    cache_dir: Path = Field(default=Path("~/.cache/multitask/embeddings"), description="The embedding cache.")
    onnx_cache_dir: Path | None = Field(default=None, description="ONNX exports (None: ~/.cache/multitask/onnx).")
    checkpoint_cache_dir: Path | None = Field(default=None, description="Checkpoints fetched from URIs.")


@dataclass
class FittedHead:
    """A trained, calibrated head and the record of its training."""

    head: TaskHead
    history: list[dict]
    calibration: dict
    epochs: int

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, embedding_dim) -> (n, num_labels) calibrated probabilities."""
        with torch.no_grad():
            return self.head.eval().probabilities(torch.from_numpy(embeddings)).numpy()


@dataclass
class AddTaskResult:
    output_dir: Path
    manifest: HeadManifest
    metrics: dict[str, dict]  # split -> full metrics
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds


def add_task(
    name: str,
    data: str | Path,
    checkpoint: str | Path,
    output: str | Path,
    labels: list[str] | None = None,
    validation: str | Path | None = None,
    test: str | Path | None = None,
    settings: AddTaskSettings | None = None,
    progress: bool = True,
) -> AddTaskResult:
    """Train task `name`'s head from the labelled file `data` on `checkpoint`'s served encoder and write its
    artifact into the folder `output`. Raises TaskNameError, DataError (naming file and line) or CheckpointError
    before any training."""
    settings = settings or AddTaskSettings()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    directory = locate_checkpoint(checkpoint, settings.checkpoint_cache_dir)
    checkpoint_manifest = read_manifest(directory)
    check_task_name(name, checkpoint_manifest.model.task_names)
    with tempfile.TemporaryDirectory(prefix="multitask-add-task-") as scratch:
        spec, train = read_new_task(name, data, labels, settings.hidden_size, Path(scratch))
        held_out = validation is None
        if held_out:
            train, valid = stratified_split(train, len(spec.labels), settings.validation_share, settings.seed)
        else:
            valid = _read(validation, spec, Path(scratch))
        tests = {"test": _read(test, spec, Path(scratch))} if test is not None else {}
    seconds["read"] = time.perf_counter() - started

    mark = time.perf_counter()
    runtime = select_runtime(directory, settings.runtime, "cpu", "auto", settings.onnx_cache_dir)
    if settings.threads:
        runtime.set_threads(settings.threads)
    if runtime.fingerprint != checkpoint_manifest.encoder.fingerprint:
        raise MultitaskError(
            f"The {settings.runtime} runtime of {checkpoint} has fingerprint {runtime.fingerprint}, its checkpoint "
            f"{checkpoint_manifest.encoder.fingerprint}: clear the ONNX cache and run again."
        )
    splits = {"train": train, "validation": valid, **tests}
    embeddings = {
        split: cached_runtime_embeddings(
            runtime, dataset, settings.cache_dir.expanduser(), settings.embed_batch_size, progress
        )
        for split, dataset in splits.items()
    }
    seconds["embed"] = time.perf_counter() - mark

    mark = time.perf_counter()
    targets = {split: np.array([e.label for e in dataset.examples]) for split, dataset in splits.items()}
    fitted = fit_head(
        spec,
        embeddings["train"],
        targets["train"],
        embeddings["validation"],
        targets["validation"],
        settings,
        dropout=checkpoint_manifest.model.dropout,
        weights=class_weights(train, len(spec.labels), settings.class_weighting),
    )
    seconds["train"] = time.perf_counter() - mark

    mark = time.perf_counter()
    metrics = {
        split: classification_metrics(targets[split], fitted.probabilities(embeddings[split]), spec.labels)
        for split in splits
        if split != "train"
    }
    output = Path(output)
    write_report(output / REPORT_DIR, {name: metrics}, {name: spec.labels}, fitted.history, {name: fitted.calibration})
    seconds["report"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    manifest = HeadManifest(
        task=spec,
        embedding_dim=runtime.embedding_dim,
        dropout=checkpoint_manifest.model.dropout,
        encoder=BoundEncoder(
            name=checkpoint_manifest.encoder.name,
            fingerprint=runtime.fingerprint,
            checkpoint=str(checkpoint),
            runtime=runtime.describe(),
        ),
        training={
            "data": {
                "train": str(data),
                "validation": str(validation) if validation else None,
                "test": str(test) if test else None,
            },
            "examples": {split: len(dataset) for split, dataset in splits.items()},
            "label_counts": dict(zip(spec.labels, train.label_counts(len(spec.labels)))),
            "validation_held_out": held_out,
            "epochs": fitted.epochs,
            "settings": settings.model_dump(
                mode="json", exclude={"cache_dir", "onnx_cache_dir", "checkpoint_cache_dir"}
            ),
            "seconds": {phase: round(s, 3) for phase, s in seconds.items()},
        },
        metrics={split: {k: m[k] for k in HEADLINE} for split, m in metrics.items()},
        calibration=fitted.calibration,
    )
    tensors = {key: value.detach().cpu().numpy() for key, value in fitted.head.state_dict().items()}
    save_head_artifact(output, manifest, tensors)
    return AddTaskResult(output, manifest, metrics, seconds)


def read_new_task(
    name: str, data: str | Path, labels: list[str] | None, hidden_size: int, scratch: Path
) -> tuple[TaskSpec, TaskDataset]:
    """The new task's spec (its labels given, else the file's, sorted) and its examples, with every problem a user
    can fix named with the file (and line): unknown labels, empty texts, a single label, too few examples."""
    local = _fetch(data, scratch)
    found = tuple(labels) if labels else file_labels(local)
    if len(set(found)) < 2:
        what = f"only the label {found[0]!r}" if found else "no labels"
        raise DataError(
            f"{data}: {what}; a task needs at least 2 labels, each with at least {MIN_EXAMPLES_PER_LABEL} examples."
        )
    try:
        spec = TaskSpec(name=name, labels=found, hidden_size=hidden_size)
    except ValidationError as exc:
        raise DataError(f"--labels {list(found)}: {exc.errors()[0]['msg']}") from None
    dataset = _read(data, spec, scratch)
    counts = dict(zip(spec.labels, dataset.label_counts(len(spec.labels))))
    short = {label: n for label, n in counts.items() if n < MIN_EXAMPLES_PER_LABEL}
    if short:
        raise DataError(
            f"{data}: too few examples of label(s) {short} (of {counts}); add-task needs at least "
            f"{MIN_EXAMPLES_PER_LABEL} examples of every label (a few dozen give a usable head), or leave the label out "
            "of --labels."
        )
    return spec, dataset


def stratified_split(dataset: TaskDataset, num_labels: int, share: float, seed: int) -> tuple[TaskDataset, TaskDataset]:
    """(train, validation): `held_out_rows` of the dataset moved to validation; both keep the file's order."""
    held = held_out_rows([e.label for e in dataset.examples], num_labels, share, seed)
    keep = tuple(e for i, e in enumerate(dataset.examples) if i not in held)
    out = tuple(e for i, e in enumerate(dataset.examples) if i in held)
    return (
        TaskDataset(dataset.task, keep, dataset.source),
        TaskDataset(dataset.task, out, f"{dataset.source} (held out)"),
    )


def held_out_rows(labels: Sequence[int], num_labels: int, share: float, seed: int) -> set[int]:
    """A stratified validation share: `share` of each label's rows (at least one, at most all but one), at random."""
    rng = random.Random(seed)
    held: set[int] = set()
    for label in range(num_labels):
        rows = [i for i, value in enumerate(labels) if value == label]
        if len(rows) >= 2:
            held.update(rng.sample(rows, min(max(1, round(share * len(rows))), len(rows) - 1)))
    return held


def fit_head(
    spec: TaskSpec,
    train_x: np.ndarray,
    train_y: np.ndarray,
    valid_x: np.ndarray,
    valid_y: np.ndarray,
    settings: AddTaskSettings,
    dropout: float = 0.1,
    weights: torch.Tensor | None = None,
) -> FittedHead:
    """Train a `TaskHead` on (n, embedding_dim) embeddings, keep the epoch with the best validation macro-F1 (ties:
    the lower validation loss; training stops after `patience` epochs without a macro-F1 gain), and calibrate its
    temperature on validation."""
    previous = torch.get_num_threads()
    if settings.threads:  # two torch threads on two busy cores ran this 20x slower than one (measured)
        torch.set_num_threads(settings.threads)
    try:
        return _fit_head(spec, train_x, train_y, valid_x, valid_y, settings, dropout, weights)
    finally:
        torch.set_num_threads(previous)


def _fit_head(spec, train_x, train_y, valid_x, valid_y, settings, dropout, weights) -> FittedHead:
    torch.manual_seed(settings.seed)
    head = TaskHead(spec, train_x.shape[1], dropout)
    x, y = torch.from_numpy(np.asarray(train_x, np.float32)), torch.from_numpy(np.asarray(train_y)).long()
    vx, vy = torch.from_numpy(np.asarray(valid_x, np.float32)), torch.from_numpy(np.asarray(valid_y)).long()
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    batch = min(settings.batch_size, len(x))
    steps = max(settings.min_steps_per_epoch, math.ceil(len(x) / batch))
    generator = torch.Generator().manual_seed(settings.seed)
    order, position = torch.randperm(len(x), generator=generator), 0
    best, best_state, best_epoch, stale, history = None, None, 0, 0, []
    for epoch in range(1, settings.max_epochs + 1):
        head.train()
        losses = []
        for _ in range(steps):
            if position + batch > len(x):
                order, position = torch.randperm(len(x), generator=generator), 0
            rows = order[position : position + batch]
            position += batch
            loss = loss_fn(head(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        head.eval()
        with torch.no_grad():
            logits = head(vx)
        f1 = classification_metrics(vy.numpy(), torch.softmax(logits, -1).numpy(), spec.labels)["macro_f1"]
        valid_loss = float(nn.functional.cross_entropy(logits, vy))
        history.append(
            {
                "epoch": epoch,
                "train_loss": {spec.name: float(np.mean(losses))},
                "validation_loss": valid_loss,
                "validation_macro_f1": {spec.name: f1},
                "validation_mean_macro_f1": f1,
            }
        )
        if best is None or (f1, -valid_loss) > best:  # the kept epoch: best macro-F1, then lowest loss
            best_state, best_epoch = copy.deepcopy(head.state_dict()), epoch
        stale = 0 if best is None or f1 > best[0] else stale + 1  # only a macro-F1 gain resets the patience
        best = max(best or (f1, -valid_loss), (f1, -valid_loss))
        if stale >= settings.patience:
            break
    head.load_state_dict(best_state)
    head.eval()
    with torch.no_grad():
        logits = head(vx)
    temperature = fit_temperature(logits, vy)
    head.temperature.fill_(temperature)
    calibration = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(torch.softmax(logits, -1).numpy(), vy.numpy()),
        "ece_after": expected_calibration_error(torch.softmax(logits / temperature, -1).numpy(), vy.numpy()),
    }
    return FittedHead(head, history, calibration, best_epoch)


def _read(location: str | Path, spec: TaskSpec, scratch: Path) -> TaskDataset:
    """`read_task_file` on a local path or a storage URI; messages name the URI, not the downloaded copy."""
    local = _fetch(location, scratch)
    try:
        dataset = read_task_file(local, spec)
    except DataError as exc:
        raise DataError(str(exc).replace(str(local), str(location))) from None
    return TaskDataset(dataset.task, dataset.examples, str(location))


def _fetch(location: str | Path, scratch: Path) -> Path:
    """A local path as it is; a URI downloaded once into `scratch`."""
    if not is_uri(location):
        return Path(location).expanduser()
    directory = scratch / hashlib.sha256(str(location).encode()).hexdigest()[:16]
    local = directory / str(location).rstrip("/").rsplit("/", 1)[-1]
    return local if local.is_file() else fetch_file(location, directory)
