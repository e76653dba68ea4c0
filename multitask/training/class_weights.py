"""Per-class loss weights for imbalanced labels, shared by joint training and `multitask add-task`."""

from __future__ import annotations

from enum import Enum

import torch

from multitask.data import TaskDataset


class ClassWeighting(str, Enum):
    none = "none"  # plain cross-entropy
    balanced = "balanced"  # weight_c = n / (num_classes * n_c), as scikit-learn's "balanced"
    sqrt = "sqrt"  # the square root of "balanced": a milder correction


def class_weights(dataset: TaskDataset, num_labels: int, weighting: ClassWeighting) -> torch.Tensor | None:
    if weighting is ClassWeighting.none:
        return None
    counts = torch.tensor(dataset.label_counts(num_labels), dtype=torch.float).clamp(min=1)
    weights = counts.sum() / (num_labels * counts)  # scikit-learn's "balanced"
    return weights.sqrt() if weighting is ClassWeighting.sqrt else weights
