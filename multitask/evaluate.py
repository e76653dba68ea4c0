"""Evaluate a checkpoint on a labelled file: metrics as JSON, plots into a folder.

multitask evaluate --checkpoint checkpoints/default --task topic --data ../shared/data/topic/test.jsonl
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from multitask.checkpoint.load import load_model
from multitask.data import read_task_file
from multitask.model import MultiTaskModel
from multitask.training.metrics import classification_metrics
from multitask.training.report import plot_confusion_matrix


@torch.inference_mode()
def label_probabilities(
    model: MultiTaskModel, task: str, texts: list[str], batch_size: int = 128, progress: bool = True
) -> np.ndarray:
    """(n, num_labels) calibrated probabilities, batching texts of similar length together (`MultiTaskModel.embed`)."""
    model.eval()
    embeddings = model.embed(texts, max_batch=batch_size, progress=f"evaluating {task}" if progress else None)
    return model.heads[task].probabilities(embeddings).float().cpu().numpy()


def evaluate_file(
    checkpoint: str | Path, task: str, data: str | Path, plots_dir: str | Path | None = None, progress: bool = True
) -> dict:
    """Metrics of one task of a checkpoint on one labelled file; a confusion-matrix PNG when `plots_dir` is set."""
    model = load_model(checkpoint)
    spec = model.config.task(task)
    dataset = read_task_file(data, spec)
    probabilities = label_probabilities(model, task, [e.text for e in dataset.examples], progress=progress)
    metrics = classification_metrics([e.label for e in dataset.examples], probabilities, spec.labels)
    metrics["data"] = str(data)
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        plots_dir.mkdir(parents=True, exist_ok=True)
        name = f"confusion_{task}_{Path(data).stem}.png"
        plot_confusion_matrix(metrics["confusion_matrix"], spec.labels, f"{task}: {data}", plots_dir / name)
        metrics["plots"] = [str(plots_dir / name)]
    return metrics
