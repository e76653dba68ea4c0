"""A task head: `Linear(embedding_dim, hidden) -> ReLU -> Dropout -> Linear(hidden, num_labels)`.

Its tensor names are the checkpoint format's (`multitask/checkpoint/format.py`, `head_shapes`), which the numpy
head and the checkpoint check read too; tests/model/test_checkpoint.py keeps the two the same."""

from __future__ import annotations

import torch
from torch import nn

from multitask.checkpoint.format import TEMPERATURE
from multitask.config import TaskSpec


class TaskHead(nn.Module):
    """Classifies the shared sentence embedding into one task's labels.

    `temperature` (a buffer, 1.0 until calibrated) divides the logits before softmax so confidences are calibrated.
    """

    def __init__(self, task: TaskSpec, embedding_dim: int, dropout: float):
        super().__init__()
        self.task = task
        self.net = nn.Sequential(
            nn.Linear(embedding_dim, task.hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(task.hidden_size, len(task.labels)),
        )
        self.register_buffer(TEMPERATURE, torch.ones(()))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(batch, embedding_dim) -> (batch, num_labels) raw logits."""
        return self.net(embeddings)

    def probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(batch, embedding_dim) -> (batch, num_labels) calibrated probabilities."""
        return torch.softmax(self(embeddings) / self.temperature, dim=-1)
