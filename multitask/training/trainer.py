"""Joint multi-task training: the shared encoder and every head learn together (hard parameter sharing).

    multitask train --config configs/default.yaml

Each step draws one task (proportional, temperature-scaled or round-robin sampling), runs a batch of that task
through the shared encoder and its head, and weights the loss per task (and per class, for imbalanced labels).
Validation runs every epoch; the epoch with the best mean macro-F1 is kept, with early stopping. A softmax
temperature per task is then fitted on validation, and the checkpoint is written with its evaluation report.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from multitask.checkpoint import CheckpointManifest, save_checkpoint
from multitask.data import MTLDataProcessor, TaskDataset, length_sorted_batches, read_task_file
from multitask.encoder import SentenceEncoder
from multitask.finetune import FinetuneMode, add_lora
from multitask.model import MultiTaskModel
from multitask.sampling import task_schedule
from multitask.training.calibration import fit_temperature
from multitask.training.config import ClassWeighting, TrainConfig
from multitask.training.embedding_cache import cached_pooled_embeddings
from multitask.training.metrics import classification_metrics, expected_calibration_error
from multitask.training.report import write_report

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """Where this training process sits in a (possibly distributed) run. Defaults: one process, no DDP."""

    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[nn.Module], nn.Module] = lambda module: module  # e.g. Ray Train's prepare_model (DDP)
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    output_dir: Path
    manifest: CheckpointManifest | None  # None on non-main workers, which save nothing
    metrics: dict[str, dict[str, dict]]  # task -> split -> metrics
    history: list[dict] = field(default_factory=list)


class TrainingModule(nn.Module):
    """What the optimizer sees: the shared encoder and the heads, one task per forward.

    Takes token ids, or (frozen mode) pooled transformer outputs read from the embedding cache.
    """

    def __init__(self, model: MultiTaskModel):
        super().__init__()
        self.model = model

    def forward(self, task: str, input_ids=None, attention_mask=None, pooled=None) -> torch.Tensor:
        if pooled is None:
            pooled = self.model.encoder.pool(input_ids, attention_mask)  # (batch, native_dim)
        return self.model.heads[task](self.model.encoder.projection(pooled))  # (batch, num_labels)


class TaskFeed:
    """One task's split as model inputs: tokenized on the fly, or rows of cached pooled embeddings."""

    def __init__(self, dataset: TaskDataset, processor: MTLDataProcessor, pooled: torch.Tensor | None):
        self.dataset = dataset
        self.processor = processor
        self.pooled = pooled  # (n, native_dim) in frozen mode
        self.labels = torch.tensor([e.label for e in dataset.examples])

    def inputs(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        if self.pooled is not None:
            return {"pooled": self.pooled[indices].to(device)}
        tokens = self.processor.tokenize([self.dataset.examples[i].text for i in indices])
        return {k: v.to(device) for k, v in tokens.items()}

    def batches(self, batch_size: int, seed: int, rank: int, world_size: int) -> Iterator[list[int]]:
        """Endless shuffled batches of this worker's shard of the examples."""
        shard = list(range(rank, len(self.dataset), world_size))
        rng = random.Random(seed)
        while True:
            rng.shuffle(shard)
            for start in range(0, len(shard) - batch_size + 1 if len(shard) >= batch_size else 1, batch_size):
                yield shard[start : start + batch_size]

    def eval_batches(self, batch_size: int) -> list[list[int]]:
        """Every example once, in batches of similar length (less padding); callers restore the order."""
        return length_sorted_batches([example.text for example in self.dataset.examples], batch_size)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(dataset: TaskDataset, num_labels: int, weighting: ClassWeighting) -> torch.Tensor | None:
    if weighting is ClassWeighting.none:
        return None
    counts = torch.tensor(dataset.label_counts(num_labels), dtype=torch.float).clamp(min=1)
    weights = counts.sum() / (num_labels * counts)  # scikit-learn's "balanced"
    return weights.sqrt() if weighting is ClassWeighting.sqrt else weights


def load_splits(config: TrainConfig) -> dict[str, dict[str, TaskDataset]]:
    """task -> split -> dataset, with the optional random train subset applied."""
    splits: dict[str, dict[str, TaskDataset]] = {}
    for task in config.model.tasks:
        files = config.data[task.name]
        train = read_task_file(files.train, task)
        if files.max_train_examples and files.max_train_examples < len(train):
            rng = random.Random(config.training.seed)
            subset = rng.sample(list(train.examples), files.max_train_examples)
            train = TaskDataset(task.name, tuple(subset), train.source)
        splits[task.name] = {"train": train, "validation": read_task_file(files.validation, task)}
        if files.test is not None:
            splits[task.name]["test"] = read_task_file(files.test, task)
    return splits


@torch.no_grad()
def predict_logits(module: TrainingModule, feed: TaskFeed, batch_size: int, device: torch.device) -> torch.Tensor:
    """(n, num_labels) logits for every example of a feed, in the feed's order."""
    module.eval()
    task = feed.dataset.task
    logits = torch.empty(len(feed.dataset), len(module.model.heads[task].task.labels))
    for indices in feed.eval_batches(batch_size):
        with _autocast(device):
            logits[indices] = module(task, **feed.inputs(indices, device)).float().cpu()
    return logits


def train(config: TrainConfig, context: WorkerContext | None = None, progress: bool = True) -> TrainResult:
    """Train the model `config` describes and (on the main worker) write the checkpoint and report."""
    context = context or WorkerContext()
    settings = config.training
    seed_everything(settings.seed)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = context.device or resolve_device(settings.device)
    show = progress and context.is_main

    splits = load_splits(config)
    encoder = SentenceEncoder.load(config.model)
    model = MultiTaskModel(encoder)
    processor = MTLDataProcessor(encoder.tokenizer, encoder.max_length)
    mode = settings.mode
    feeds = _make_feeds(config, splits, encoder, processor, device, show)
    if mode is FinetuneMode.frozen:
        encoder.transformer.requires_grad_(False)
        encoder.transformer = encoder.transformer.cpu()  # never run again: the cache holds its outputs
    elif mode is FinetuneMode.lora:
        encoder.transformer = add_lora(encoder.transformer, settings.lora)
    module = TrainingModule(model).to(device)
    trained = context.wrap_model(module)

    optimizer = _optimizer(model, config)
    sizes = {task: len(parts["train"]) for task, parts in splits.items()}
    steps_per_epoch = settings.steps_per_epoch or max(
        1, math.ceil(sum(sizes.values()) / settings.batch_size / context.world_size)
    )
    total_steps = steps_per_epoch * settings.epochs
    warmup = int(total_steps * settings.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / max(1, warmup), max(0.0, (total_steps - step) / max(1, total_steps - warmup)))
    )
    losses = {
        task.name: nn.CrossEntropyLoss(
            weight=_to(class_weights(splits[task.name]["train"], len(task.labels), settings.class_weighting), device)
        )
        for task in config.model.tasks
    }
    streams = {
        task: feeds[task]["train"].batches(settings.batch_size, settings.seed + i, context.rank, context.world_size)
        for i, task in enumerate(feeds)
    }

    history: list[dict] = []
    best_score, best_state, stale = -1.0, None, 0
    for epoch in range(1, settings.epochs + 1):
        trained.train()
        schedule = task_schedule(sizes, steps_per_epoch, settings.sampling, settings.sampling_temperature, settings.seed + epoch)
        epoch_losses: dict[str, list[float]] = {task: [] for task in sizes}
        bar = tqdm(schedule, desc=f"epoch {epoch}/{settings.epochs}", disable=not show, unit="step")
        for task in bar:
            feed = feeds[task]["train"]
            indices = next(streams[task])
            with _autocast(device):
                logits = trained(task, **feed.inputs(indices, device))
            loss = losses[task](logits.float(), feed.labels[indices].to(device))
            (settings.loss_weights.get(task, 1.0) * loss).backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_losses[task].append(loss.item())
            if len(epoch_losses[task]) % 20 == 0:
                bar.set_postfix({t: f"{np.mean(v[-20:]):.3f}" for t, v in epoch_losses.items() if v})

        validation = {
            task: classification_metrics(
                parts["validation"].labels.numpy(),
                torch.softmax(predict_logits(module, parts["validation"], settings.eval_batch_size, device), -1).numpy(),
                config.model.task(task).labels,
            )["macro_f1"]
            for task, parts in feeds.items()
        }
        score = float(np.mean(list(validation.values())))
        history.append(
            {
                "epoch": epoch,
                "train_loss": {t: float(np.mean(v)) for t, v in epoch_losses.items() if v},
                "validation_macro_f1": validation,
                "validation_mean_macro_f1": score,
            }
        )
        if context.is_main:
            tqdm.write(f"epoch {epoch}: validation macro-F1 {validation} mean {score:.4f}")
        if score > best_score:
            best_score, best_state, stale = score, copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
            if stale >= settings.early_stopping_patience:
                if context.is_main:
                    tqdm.write(f"early stopping: no gain for {stale} epoch(s); keeping the best epoch")
                break

    module.load_state_dict(best_state)
    calibration = _calibrate(module, feeds, settings, device) if settings.calibrate else {}
    metrics = {
        task: {
            split: classification_metrics(
                feed.labels.numpy(),
                _probabilities(module, feed, settings.eval_batch_size, device),
                config.model.task(task).labels,
            )
            for split, feed in parts.items()
            if split != "train"
        }
        for task, parts in feeds.items()
    }
    result = TrainResult(config.output_dir, None, metrics, history)
    if context.is_main:
        module.cpu()
        result.manifest = save_checkpoint(
            model,
            config.output_dir,
            finetune=mode,
            lora=settings.lora if mode is FinetuneMode.lora else None,
            training=portable_training_record(config),
            metrics=_summary(metrics),
            calibration=calibration,
        )
        labels = {task.name: task.labels for task in config.model.tasks}
        write_report(config.output_dir / "report", metrics, labels, history, calibration)
    return result


def portable_training_record(config: TrainConfig) -> dict:
    """The training config as stored in the checkpoint: data paths relative to the checkpoint folder, so the
    record means the same on every machine; machine-local settings (cache folder, output folder) left out."""
    record = config.model_dump(mode="json", exclude={"model", "output_dir"})
    record["training"].pop("frozen_cache_dir", None)
    for files in record["data"].values():
        for split in ("train", "validation", "test"):
            if files.get(split):
                files[split] = os.path.relpath(files[split], config.output_dir)
    return record


def _make_feeds(config, splits, encoder, processor, device, show) -> dict[str, dict[str, TaskFeed]]:
    frozen = config.training.mode is FinetuneMode.frozen
    feeds: dict[str, dict[str, TaskFeed]] = {}
    for task, parts in splits.items():
        feeds[task] = {}
        for split, dataset in parts.items():
            pooled = None
            if frozen:
                pooled = cached_pooled_embeddings(
                    encoder, processor, dataset, config.training.frozen_cache_dir, device,
                    config.training.eval_batch_size, show,
                )
            feeds[task][split] = TaskFeed(dataset, processor, pooled)
    return feeds


def _optimizer(model: MultiTaskModel, config: TrainConfig) -> torch.optim.Optimizer:
    settings = config.training
    head_params = list(model.encoder.projection.parameters()) + list(model.heads.parameters())
    encoder_params = [p for p in model.encoder.transformer.parameters() if p.requires_grad]
    groups = [{"params": head_params, "lr": settings.head_learning_rate}]
    if settings.mode is not FinetuneMode.frozen and encoder_params:
        groups.append({"params": encoder_params, "lr": settings.encoder_learning_rate})
    return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)


def _calibrate(module: TrainingModule, feeds, settings, device) -> dict[str, dict]:
    """Fit each head's temperature on its validation split and report ECE before and after."""
    calibration = {}
    for task, parts in feeds.items():
        feed = parts["validation"]
        logits = predict_logits(module, feed, settings.eval_batch_size, device)
        temperature = fit_temperature(logits, feed.labels)
        module.model.heads[task].temperature.fill_(temperature)
        calibration[task] = {
            "temperature": temperature,
            "ece_before": expected_calibration_error(torch.softmax(logits, -1).numpy(), feed.labels.numpy()),
            "ece_after": expected_calibration_error(torch.softmax(logits / temperature, -1).numpy(), feed.labels.numpy()),
        }
    return calibration


def _probabilities(module: TrainingModule, feed: TaskFeed, batch_size: int, device) -> np.ndarray:
    temperature = module.model.heads[feed.dataset.task].temperature.cpu()
    return torch.softmax(predict_logits(module, feed, batch_size, device) / temperature, -1).numpy()


def _summary(metrics: dict[str, dict[str, dict]]) -> dict:
    """The headline numbers stored in the checkpoint's config.json (the full tables live in report/)."""
    keep = ("examples", "accuracy", "macro_f1", "macro_recall", "ece")
    return {task: {split: {k: m[k] for k in keep} for split, m in splits.items()} for task, splits in metrics.items()}


def _autocast(device: torch.device):
    """bf16 autocast on GPU only: on this CPU it is slower than fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)
