"""The training config: a YAML file validated by pydantic. Relative paths are relative to the YAML file.

multitask train --config configs/default.yaml
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from multitask.config import ModelConfig
from multitask.errors import MultitaskError
from multitask.finetune import FinetuneMode, LoraSpec
from multitask.sampling import SamplingStrategy
from multitask.training.class_weights import ClassWeighting
from multitask.training.wise_ft import WiseFtSettings


class TaskData(BaseModel):
    """A task's data files (JSON Lines or CSV with `text` and `label`)."""

    model_config = ConfigDict(extra="forbid")

    train: Path
    validation: Path
    test: Path | None = None
    max_train_examples: int | None = Field(default=None, gt=0, description="Use a random subset of train.")


class TrainingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: FinetuneMode = Field(default=FinetuneMode.lora, description="frozen, lora or full fine-tuning.")
    lora: LoraSpec = Field(default_factory=LoraSpec)
    epochs: int = Field(default=3, gt=0)
    steps_per_epoch: int | None = Field(
        default=None, gt=0, description="Batches per epoch; default: all training examples once."
    )
    batch_size: int = Field(default=32, gt=0)
    eval_batch_size: int = Field(default=128, gt=0)
    head_learning_rate: float = Field(default=1e-3, gt=0, description="For projection and heads.")
    encoder_learning_rate: float = Field(default=2e-4, gt=0, description="For encoder weights or adapters.")
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    sampling: SamplingStrategy = SamplingStrategy.temperature
    sampling_temperature: float = Field(default=2.0, gt=0)
    loss_weights: dict[str, float] = Field(default_factory=dict, description="Per-task loss weight, default 1.")
    class_weighting: ClassWeighting = ClassWeighting.sqrt
    early_stopping_patience: int = Field(default=2, ge=1, description="Epochs without mean macro-F1 gain.")
    wise_ft: WiseFtSettings | None = Field(
        default=None,
        description="After training, interpolate the LoRA delta toward the base encoder (alpha chosen on validation).",
    )
    calibrate: bool = Field(default=True, description="Fit a softmax temperature per task on validation.")
    seed: int = 13
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    torch_threads: int | None = Field(default=None, gt=0, description="CPU threads; default: torch's choice.")
    frozen_cache_dir: Path = Field(
        default=Path("~/.cache/multitask/embeddings"),
        description="Frozen-mode embedding cache; a relative path is relative to the YAML file.",
    )


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelConfig
    data: dict[str, TaskData]
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    output_dir: Path

    @model_validator(mode="after")
    def _data_matches_tasks(self) -> TrainConfig:
        tasks = set(self.model.task_names)
        missing, extra = tasks - set(self.data), set(self.data) - tasks
        if missing or extra:
            raise ValueError(
                f"'data' must have exactly one entry per task {sorted(tasks)}; "
                f"missing {sorted(missing)}, unknown {sorted(extra)}"
            )
        if self.training.wise_ft is not None and self.training.mode is not FinetuneMode.lora:
            raise ValueError(f"training.wise_ft needs training.mode: lora (got {self.training.mode.value})")
        unknown_weights = set(self.training.loss_weights) - tasks
        if unknown_weights:
            raise ValueError(f"loss_weights names unknown task(s) {sorted(unknown_weights)}; tasks: {sorted(tasks)}")
        return self

    def resolve_paths(self, base: Path) -> TrainConfig:
        """Make relative data and output paths relative to `base` (the YAML file's folder)."""

        def resolve(path: Path | None) -> Path | None:
            if path is None:
                return None
            path = path.expanduser()
            return path if path.is_absolute() else (base / path).resolve()

        data = {
            task: files.model_copy(
                update={
                    "train": resolve(files.train),
                    "validation": resolve(files.validation),
                    "test": resolve(files.test),
                }
            )
            for task, files in self.data.items()
        }
        training = self.training.model_copy(update={"frozen_cache_dir": resolve(self.training.frozen_cache_dir)})
        return self.model_copy(update={"data": data, "training": training, "output_dir": resolve(self.output_dir)})


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a YAML training config; errors name the file and the bad field."""
    path = Path(path)
    if not path.is_file():
        raise MultitaskError(f"Training config {path} not found.")
    try:
        raw = yaml.safe_load(path.read_text())
        config = TrainConfig.model_validate(raw)
    except yaml.YAMLError as exc:
        raise MultitaskError(f"{path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        raise MultitaskError(f"{path} is not a valid training config:\n{exc}") from exc
    return config.resolve_paths(path.parent.resolve())
