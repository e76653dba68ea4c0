"""Evaluate a checkpoint on a labelled file: metrics as JSON, plots into a folder.

multitask evaluate --checkpoint checkpoints/default --task topic --data ../shared/data/topic/test.jsonl
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from multitask.checkpoint import load_model
from multitask.data import length_sorted_batches, read_task_file
from multitask.model import MultiTaskModel
from multitask.training.metrics import classification_metrics
from multitask.training.report import plot_confusion_matrix


@torch.inference_mode()
def task_probabilities(
    model: MultiTaskModel, task: str, texts: list[str], batch_size: int = 128, progress: bool = True
) -> np.ndarray:
    """(n, num_labels) calibrated probabilities, batching texts of similar length together."""
    model.eval()
    head = model.heads[task]
    out = np.empty((len(texts), len(head.task.labels)), dtype=np.float32)
    for indices in tqdm(length_sorted_batches(texts, batch_size), desc=f"evaluating {task}", disable=not progress):
        tokens = {k: v.to(model.device) for k, v in model.encoder.tokenize([texts[i] for i in indices]).items()}
        out[indices] = head.probabilities(model.encoder(**tokens)).float().cpu().numpy()
    return out


def evaluate_file(
    checkpoint: str | Path, task: str, data: str | Path, plots_dir: str | Path | None = None, progress: bool = True
) -> dict:
    """Metrics of one task of a checkpoint on one labelled file; a confusion-matrix PNG when `plots_dir` is set."""
    model = load_model(checkpoint)
    spec = model.config.task(task)
    dataset = read_task_file(data, spec)
    probabilities = task_probabilities(model, task, [e.text for e in dataset.examples], progress=progress)
    metrics = classification_metrics([e.label for e in dataset.examples], probabilities, spec.labels)
    metrics["data"] = str(data)
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        plots_dir.mkdir(parents=True, exist_ok=True)
        name = f"confusion_{task}_{Path(data).stem}.png"
        plot_confusion_matrix(metrics["confusion_matrix"], spec.labels, f"{task}: {data}", plots_dir / name)
        metrics["plots"] = [str(plots_dir / name)]
    return metrics
