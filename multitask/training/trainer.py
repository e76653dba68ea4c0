"""Joint multi-task training: the shared encoder and every head learn together (hard parameter sharing).

    multitask train --config configs/default.yaml

Each step draws one task (proportional, temperature-scaled or round-robin sampling), runs a batch of that task
through the shared encoder and its head, and weights the loss per task (and per class, for imbalanced labels).
Validation runs every epoch; the epoch with the best mean macro-F1 is kept, with early stopping. With
`training.wise_ft`, the LoRA delta is then scaled toward the base encoder (`multitask/training/wise_ft.py`). A softmax
temperature per task is fitted on validation, and the checkpoint is written with its evaluation report.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from multitask.checkpoint.load import load_model, save_checkpoint
from multitask.checkpoint.manifest import CheckpointManifest, FinetuneMode, read_manifest
from multitask.data import TaskDataset, read_task_file
from multitask.encoder import SentenceEncoder
from multitask.errors import MultitaskError
from multitask.finetune import add_lora
from multitask.model import MultiTaskModel
from multitask.runtime.select import pick_device
from multitask.runtime.torch_runtime import TorchEncoderRuntime
from multitask.sampling import task_schedule
from multitask.training.activation_ranges import write_activation_ranges
from multitask.training.calibration import fit_temperature
from multitask.training.class_weights import class_weights
from multitask.training.config import TrainConfig
from multitask.training.embedding_cache import cached_pooled_embeddings
from multitask.training.metrics import classification_metrics, expected_calibration_error
from multitask.training.report import HISTORY_FILE, write_report
from multitask.training.wise_ft import interpolate


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
    """What the optimizer steps and DDP wraps: the trainable part of the encoder and the heads, one task per forward.

    Takes token ids, or (frozen mode) pooled transformer outputs read from the embedding cache. A frozen transformer
    is left out of this module: it never runs again, so it stays on the CPU and DDP does not synchronise it.
    """

    def __init__(self, model: MultiTaskModel, frozen: bool):
        super().__init__()
        self.encoder = None if frozen else model.encoder  # transformer + projection
        self.projection = model.encoder.projection
        self.heads = model.heads

    def forward(self, task: str, input_ids=None, attention_mask=None, pooled=None) -> torch.Tensor:
        if pooled is None:
            pooled = self.encoder.pool(input_ids, attention_mask)  # (batch, native_dim)
        return self.heads[task](self.projection(pooled))  # (batch, num_labels)


class TaskFeed:
    """One task's split as model inputs: tokenized on the fly, or rows of cached pooled embeddings."""

    def __init__(self, dataset: TaskDataset, encoder: SentenceEncoder, pooled: torch.Tensor | None):
        self.dataset = dataset
        self.encoder = encoder  # its tokenizer
        self.pooled = pooled  # (n, native_dim) in frozen mode
        self.labels = torch.tensor([e.label for e in dataset.examples])

    @property
    def texts(self) -> list[str]:
        return [example.text for example in self.dataset.examples]

    def inputs(self, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        if self.pooled is not None:
            return {"pooled": self.pooled[indices].to(device)}
        tokens = self.encoder.tokenize([self.dataset.examples[i].text for i in indices])
        return {k: v.to(device) for k, v in tokens.items()}

    def batches(self, batch_size: int, seed: int, rank: int, world_size: int) -> Iterator[list[int]]:
        """Endless shuffled batches of this worker's shard of the examples."""
        shard = list(range(rank, len(self.dataset), world_size))
        rng = random.Random(seed)
        while True:
            rng.shuffle(shard)
            for start in range(0, len(shard) - batch_size + 1 if len(shard) >= batch_size else 1, batch_size):
                yield shard[start : start + batch_size]


def quiet_model_loading() -> None:
    """No "Loading weights" bar from transformers in this process: `--no-progress` means no bars at all."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
        unseen = [label for label, count in zip(task.labels, train.label_counts(len(task.labels))) if not count]
        if unseen:  # the head keeps an output for each, which training never raises: say so, do not refuse
            tqdm.write(
                f"warning: task {task.name!r}: label(s) {unseen} of the config have no training examples in "
                f"{train.source}; the model will (almost) never predict them.",
                file=sys.stderr,
            )
        splits[task.name] = {"train": train, "validation": read_task_file(files.validation, task)}
        if files.test is not None:
            splits[task.name]["test"] = read_task_file(files.test, task)
    return splits


@torch.no_grad()
def predict_logits(module: TrainingModule, feed: TaskFeed, batch_size: int, device: torch.device) -> torch.Tensor:
    """(n, num_labels) logits for every example of a feed, in the feed's order: the cached pooled outputs (frozen),
    or the texts through the inference core's batched forward (`TorchEncoderRuntime.pooled`)."""
    module.eval()
    with _autocast(device):
        pooled = feed.pooled
        if pooled is None:
            pooled = torch.from_numpy(TorchEncoderRuntime(module.encoder).pooled(feed.texts, max_batch=batch_size))
        return module(feed.dataset.task, pooled=pooled.to(device)).float().cpu()


def train(config: TrainConfig, context: WorkerContext | None = None, progress: bool = True) -> TrainResult:
    """Train the model `config` describes and (on the main worker) write the checkpoint and report."""
    context = context or WorkerContext()
    settings = config.training
    seed_everything(settings.seed)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = context.device or torch.device(pick_device(settings.device))
    show = progress and context.is_main
    if not show:
        quiet_model_loading()

    splits = load_splits(config)
    model, feeds = _build_model(config, splits, device, show)
    module = TrainingModule(model, frozen=settings.mode is FinetuneMode.frozen).to(device)
    history = _fit(config, context, module, feeds, device, show)  # leaves the best epoch's weights in `module`
    return _finish(config, context, model, module, feeds, history, device, show)


def wise_ft_checkpoint(config: TrainConfig, checkpoint: str | Path, progress: bool = True) -> TrainResult:
    """Run the end of `train` (WiSE-FT, calibration, evaluation, saving into `config.output_dir`) on a checkpoint
    already trained with `config`'s model: `training.wise_ft` applied after the fact, without training again."""
    checkpoint = Path(checkpoint)
    settings = config.training
    if not progress:
        quiet_model_loading()
    if settings.wise_ft is None:
        raise MultitaskError("The training config has no training.wise_ft section: nothing to apply.")
    manifest = read_manifest(checkpoint)
    if manifest.encoder.finetune is not FinetuneMode.lora or manifest.model != config.model:
        raise MultitaskError(
            f"{checkpoint} was not trained with this config's model and LoRA (its encoder: "
            f"{manifest.encoder.finetune.value}); WiSE-FT scales the LoRA delta of a checkpoint of the same model."
        )
    seed_everything(settings.seed)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = torch.device(pick_device(settings.device))
    history_file = checkpoint / "report" / HISTORY_FILE
    history = json.loads(history_file.read_text()) if history_file.is_file() else []
    model = load_model(checkpoint, merge_lora=False)  # the adapters stay apart, to be scaled
    feeds = _make_feeds(config, load_splits(config), model.encoder, device, progress)
    module = TrainingModule(model, frozen=False).to(device)
    return _finish(config, WorkerContext(), model, module, feeds, history, device, progress)


def _finish(config: TrainConfig, context: WorkerContext, model, module, feeds, history, device, show) -> TrainResult:
    """After fitting: WiSE-FT when configured, temperatures, the evaluation of every split, and (main worker) the
    checkpoint and its report."""
    settings = config.training
    wise_ft = None
    if settings.wise_ft is not None:
        wise_ft = interpolate(
            module.encoder.transformer,
            settings.wise_ft,
            lambda: _validation_macro_f1(module, feeds, config, device),
            show,
        )
    calibration = _calibrate(module, feeds, settings, device) if settings.calibrate else {}
    metrics = _evaluate(module, feeds, config, device)

    result = TrainResult(config.output_dir, None, metrics, history)
    if context.is_main:
        module.cpu()
        result.manifest = _save(config, model, metrics, history, calibration, wise_ft)
        validation = {task: parts["validation"].texts for task, parts in feeds.items()}
        write_activation_ranges(config.output_dir, validation, show)  # the int8 runtime's fixed scales
    return result


def _build_model(config: TrainConfig, splits, device, show) -> tuple[MultiTaskModel, dict[str, dict[str, TaskFeed]]]:
    """The model to train and its inputs; frozen mode encodes every text once here (or reads the cache)."""
    settings = config.training
    encoder = SentenceEncoder.load(config.model)
    model = MultiTaskModel(encoder)
    feeds = _make_feeds(config, splits, encoder, device, show)
    if settings.mode is FinetuneMode.frozen:
        encoder.transformer.requires_grad_(False)
        encoder.transformer.cpu()  # never runs again: the cache holds its outputs (and TrainingModule leaves it out)
    elif settings.mode is FinetuneMode.lora:
        encoder.transformer = add_lora(encoder.transformer, settings.lora)
    return model, feeds


def _fit(config: TrainConfig, context: WorkerContext, module: TrainingModule, feeds, device, show) -> list[dict]:
    """Train epoch by epoch, validating after each, until the epochs run out or validation stops improving.

    Returns the per-epoch history; `module` ends with the weights of the epoch with the best mean macro-F1.
    """
    settings = config.training
    sizes = {task: len(parts["train"].dataset) for task, parts in feeds.items()}
    steps_per_epoch = settings.steps_per_epoch or max(
        1, math.ceil(sum(sizes.values()) / settings.batch_size / context.world_size)
    )
    step = _Stepper(config, context.wrap_model(module), module, feeds, steps_per_epoch, device)
    streams = {
        task: feeds[task]["train"].batches(settings.batch_size, settings.seed + i, context.rank, context.world_size)
        for i, task in enumerate(feeds)
    }
    best = _BestEpoch(settings.early_stopping_patience)
    history: list[dict] = []
    for epoch in range(1, settings.epochs + 1):
        schedule = task_schedule(
            sizes, steps_per_epoch, settings.sampling, settings.sampling_temperature, settings.seed + epoch
        )
        bar = tqdm(schedule, desc=f"epoch {epoch}/{settings.epochs}", disable=not show, unit="step")
        losses = _train_epoch(step, streams, bar)
        validation = _validation_macro_f1(module, feeds, config, device)
        score = float(np.mean(list(validation.values())))
        history.append(
            {
                "epoch": epoch,
                "train_loss": {t: float(np.mean(v)) for t, v in losses.items() if v},
                "validation_macro_f1": validation,
                "validation_mean_macro_f1": score,
            }
        )
        if context.is_main:
            tqdm.write(f"epoch {epoch}: validation macro-F1 {validation} mean {score:.4f}", file=sys.stderr)
        if best.stop_after(score, module):
            if context.is_main:
                tqdm.write(
                    f"early stopping: no gain for {best.stale} epoch(s); keeping the best epoch", file=sys.stderr
                )
            break
    module.load_state_dict(best.state)
    if context.is_main:
        tqdm.write(
            f"kept epoch {best.epoch} of {len(history)}: validation mean macro-F1 {best.score:.4f}", file=sys.stderr
        )
    return history


def _train_epoch(step: _Stepper, streams: dict[str, Iterator[list[int]]], bar: tqdm) -> dict[str, list[float]]:
    """One epoch: a step on the next batch of each task the schedule (`bar`) names; returns task -> step losses."""
    losses: dict[str, list[float]] = {task: [] for task in streams}
    step.trained.train()
    for task in bar:
        losses[task].append(step(task, next(streams[task])))
        if len(losses[task]) % 20 == 0:
            bar.set_postfix({t: f"{np.mean(v[-20:]):.3f}" for t, v in losses.items() if v})
    return losses


class _Stepper:
    """One optimisation step on one task's batch: forward, weighted (class- and task-) loss, clipped backward,
    AdamW step and the learning rate's linear warmup and decay over every step of every epoch."""

    def __init__(self, config: TrainConfig, trained: nn.Module, module: TrainingModule, feeds, steps_per_epoch, device):
        settings = config.training
        self.trained = trained  # `module`, wrapped for DDP when distributed
        self.module = module
        self.feeds = feeds
        self.device = device
        self.loss_weights = settings.loss_weights
        self.optimizer = _optimizer(module, config)
        total_steps = steps_per_epoch * settings.epochs
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(total_steps * settings.warmup_ratio), total_steps
        )
        self.losses = {
            task.name: nn.CrossEntropyLoss(
                weight=_to(
                    class_weights(feeds[task.name]["train"].dataset, len(task.labels), settings.class_weighting),
                    device,
                )
            )
            for task in config.model.tasks
        }

    def __call__(self, task: str, indices: list[int]) -> float:
        """Train on the examples `indices` of `task`'s training split; returns the (unweighted) loss."""
        feed = self.feeds[task]["train"]
        with _autocast(self.device):
            logits = self.trained(task, **feed.inputs(indices, self.device))
        loss = self.losses[task](logits.float(), feed.labels[indices].to(self.device))
        (self.loss_weights.get(task, 1.0) * loss).backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


class _BestEpoch:
    """Early stopping: keeps a copy of the weights of the best-scoring epoch and says when `patience` epochs in a
    row brought no gain."""

    def __init__(self, patience: int):
        self.patience = patience
        self.score, self.state, self.stale, self.epoch, self.epochs = -1.0, None, 0, 0, 0

    def stop_after(self, score: float, module: nn.Module) -> bool:
        self.epochs += 1
        if score > self.score:
            self.score, self.state, self.stale = score, copy.deepcopy(module.state_dict()), 0
            self.epoch = self.epochs
            return False
        self.stale += 1
        return self.stale >= self.patience


def _validation_macro_f1(module: TrainingModule, feeds, config: TrainConfig, device) -> dict[str, float]:
    """Each task's macro-F1 on its validation split (the early-stopping score), before calibration."""
    return {
        task: classification_metrics(
            parts["validation"].labels.numpy(),
            torch.softmax(
                predict_logits(module, parts["validation"], config.training.eval_batch_size, device), -1
            ).numpy(),
            config.model.task(task).labels,
        )["macro_f1"]
        for task, parts in feeds.items()
    }


def _evaluate(module: TrainingModule, feeds, config: TrainConfig, device) -> dict[str, dict[str, dict]]:
    """task -> split -> metrics of the final (calibrated) model on every split but train."""
    return {
        task: {
            split: classification_metrics(
                feed.labels.numpy(),
                _probabilities(module, feed, config.training.eval_batch_size, device),
                config.model.task(task).labels,
            )
            for split, feed in parts.items()
            if split != "train"
        }
        for task, parts in feeds.items()
    }


def _save(config: TrainConfig, model: MultiTaskModel, metrics, history, calibration, wise_ft) -> CheckpointManifest:
    """Write the checkpoint (weights, manifest with the headline metrics) and its evaluation report."""
    settings = config.training
    training = portable_training_record(config)
    if wise_ft is not None:
        training["wise_ft"] = wise_ft  # the chosen alpha and every alpha's validation scores
    manifest = save_checkpoint(
        model,
        config.output_dir,
        finetune=settings.mode,
        lora=settings.lora if settings.mode is FinetuneMode.lora else None,
        training=training,
        metrics=_summary(metrics),
        calibration=calibration,
    )
    labels = {task.name: task.labels for task in config.model.tasks}
    write_report(config.output_dir / "report", metrics, labels, history, calibration, wise_ft)
    return manifest


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


def _make_feeds(config, splits, encoder, device, show) -> dict[str, dict[str, TaskFeed]]:
    frozen = config.training.mode is FinetuneMode.frozen
    feeds: dict[str, dict[str, TaskFeed]] = {}
    for task, parts in splits.items():
        feeds[task] = {}
        for split, dataset in parts.items():
            pooled = None
            if frozen:
                pooled = cached_pooled_embeddings(
                    encoder,
                    dataset,
                    config.training.frozen_cache_dir,
                    device,
                    config.training.eval_batch_size,
                    show,
                )
            feeds[task][split] = TaskFeed(dataset, encoder, pooled)
    return feeds


def _optimizer(module: TrainingModule, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with one learning rate for the projection and heads, another for the encoder's trainable weights."""
    settings = config.training
    head_params = list(module.projection.parameters()) + list(module.heads.parameters())
    groups = [{"params": head_params, "lr": settings.head_learning_rate}]
    if module.encoder is not None:  # LoRA adapters, or every weight in full mode
        encoder_params = [p for p in module.encoder.transformer.parameters() if p.requires_grad]
        groups.append({"params": encoder_params, "lr": settings.encoder_learning_rate})
    return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)


def _calibrate(module: TrainingModule, feeds, settings, device) -> dict[str, dict]:
    """Fit each head's temperature on its validation split and report ECE before and after."""
    calibration = {}
    for task, parts in feeds.items():
        feed = parts["validation"]
        logits = predict_logits(module, feed, settings.eval_batch_size, device)
        temperature = fit_temperature(logits, feed.labels)
        module.heads[task].temperature.fill_(temperature)
        calibration[task] = {
            "temperature": temperature,
            "ece_before": expected_calibration_error(torch.softmax(logits, -1).numpy(), feed.labels.numpy()),
            "ece_after": expected_calibration_error(
                torch.softmax(logits / temperature, -1).numpy(), feed.labels.numpy()
            ),
        }
    return calibration


def _probabilities(module: TrainingModule, feed: TaskFeed, batch_size: int, device) -> np.ndarray:
    temperature = module.heads[feed.dataset.task].temperature.cpu()
    return torch.softmax(predict_logits(module, feed, batch_size, device) / temperature, -1).numpy()


def _summary(metrics: dict[str, dict[str, dict]]) -> dict:
    """The headline numbers stored in the checkpoint's config.json (the full tables live in report/)."""
    keep = ("examples", "accuracy", "macro_f1", "macro_recall", "ece")
    return {task: {split: {k: m[k] for k in keep} for split, m in splits.items()} for task, splits in metrics.items()}


def _autocast(device: torch.device):
    """bf16 autocast on GPU only: on this CPU it is slower than fp32."""
    return (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)
