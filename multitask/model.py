"""The multi-task model: one shared `SentenceEncoder`, one `TaskHead` per task (hard parameter sharing).

    model = MultiTaskModel(SentenceEncoder.load(config))
    out = model(**model.encoder.tokenize(texts), tasks=["topic"], return_embeddings=True)
    out.logits["topic"]   # (batch, 6)
    out.embeddings        # (batch, embedding_dim)

`predict` turns texts into the same result dicts that the HTTP API returns; it and `embed` run the encoder through
the inference core (`multitask/runtime/torch_runtime.py`), as serving and evaluation do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from multitask.config import ModelConfig, unknown_task_message
from multitask.encoder import SentenceEncoder
from multitask.heads import TaskHead
from multitask.results import label_scores
from multitask.runtime.torch_runtime import TorchEncoderRuntime


@dataclass
class MultiTaskOutput:
    logits: dict[str, torch.Tensor]  # task -> (batch, num_labels)
    embeddings: torch.Tensor | None  # (batch, embedding_dim) when asked for


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: SentenceEncoder):
        super().__init__()
        self.encoder = encoder
        self.config: ModelConfig = encoder.config
        self.heads = nn.ModuleDict(
            {task.name: TaskHead(task, self.config.embedding_dim, self.config.dropout) for task in self.config.tasks}
        )

    def check_tasks(self, tasks: Sequence[str] | None) -> list[str]:
        """Validate a task subset (None = every task) and return it as a list, in the asked order."""
        if tasks is None:
            return list(self.heads)
        if isinstance(tasks, str):  # tasks="topic" means one task, not the tasks 't', 'o', 'p', ...
            tasks = [tasks]
        unknown = [task for task in tasks if task not in self.heads]
        if unknown:
            raise KeyError(unknown_task_message(unknown[0], list(self.heads)))
        return list(tasks)

    def classify(self, embeddings: torch.Tensor, tasks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Run the asked heads on shared embeddings: task -> (batch, num_labels) logits."""
        return {task: self.heads[task](embeddings) for task in self.check_tasks(tasks)}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        tasks: Sequence[str] | None = None,
        return_embeddings: bool = False,
    ) -> MultiTaskOutput:
        embeddings = self.encoder(input_ids, attention_mask)  # (batch, embedding_dim)
        return MultiTaskOutput(self.classify(embeddings, tasks), embeddings if return_embeddings else None)

    @torch.inference_mode()
    def predict(
        self, texts: Sequence[str], tasks: Sequence[str] | None = None, return_embeddings: bool = False
    ) -> list[dict]:
        """Texts -> one result dict per text: {task: {label, confidence, scores}, "embedding"?: [float]}."""
        was_training = self.training
        self.eval()
        try:
            tasks = self.check_tasks(tasks)
            if not texts:
                return []
            embeddings = self.embed(texts)
            results: list[dict] = [{} for _ in texts]
            for task in tasks:
                probs = self.heads[task].probabilities(embeddings).float().cpu()
                for result, row in zip(results, probs):
                    result[task] = label_scores(self.heads[task].task.labels, row.tolist())
            if return_embeddings:
                for result, vector in zip(results, embeddings.float().cpu()):
                    result["embedding"] = vector.tolist()
            return results
        finally:
            self.train(was_training)

    def embed(self, texts: Sequence[str], max_batch: int = 0, progress: str | None = None) -> torch.Tensor:
        """(n, embedding_dim) shared embeddings on the heads' device and dtype, in length-sorted passes of at most
        `max_batch` texts (0: one pass); `progress`: a progress bar with this title. The caller sets eval mode."""
        batch = TorchEncoderRuntime(self.encoder).encode(list(texts), max_batch=max_batch, progress=progress)
        weight = next(self.heads.parameters())
        return torch.from_numpy(batch.embeddings).to(device=weight.device, dtype=weight.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
