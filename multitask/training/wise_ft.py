"""WiSE-FT (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models"): after fine-tuning, move the encoder
part of the way back to its pre-trained weights, w(alpha) = base + alpha * (fine-tuned - base).

Fine-tuning on one domain (HuffPost headlines, tweets) gains in domain and loses some of what the pre-trained
encoder knew about other text; interpolating the weights keeps more of it at a small in-domain cost. With LoRA the
fine-tuned delta is `B @ A * scaling`, so w(alpha) is the same adapters with `B` scaled by alpha: the result is an
ordinary LoRA checkpoint, served like any other.

alpha is chosen on the validation splits only (never on out-of-domain data): every alpha of the grid is scored with
each task's validation macro-F1, and the smallest alpha whose every task stays within `tolerance` of alpha = 1 (the
fine-tuned encoder) is kept. The heads stay as trained; their temperatures are fitted afterwards, at the chosen alpha.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm.auto import tqdm


class WiseFtSettings(BaseModel):
    """`training.wise_ft` of a training config (LoRA only)."""

    model_config = ConfigDict(extra="forbid")

    alphas: list[float] = Field(
        default=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
        description="Interpolation weights to score: 1 = the fine-tuned encoder, 0 = the pre-trained one.",
    )
    tolerance: float = Field(
        default=0.01, ge=0, description="Validation macro-F1 each task may lose against alpha = 1 (absolute)."
    )

    @field_validator("alphas")
    @classmethod
    def _grid(cls, alphas: list[float]) -> list[float]:
        if any(not 0.0 <= alpha <= 1.0 for alpha in alphas):
            raise ValueError(f"every alpha must be in [0, 1]; got {alphas}")
        if 1.0 not in alphas:
            raise ValueError("alphas must include 1.0, the fine-tuned encoder every other alpha is compared with")
        return sorted(set(alphas), reverse=True)


def choose_alpha(scores: dict[float, dict[str, float]], tolerance: float) -> float:
    """The smallest alpha whose every task's validation score is within `tolerance` of alpha = 1's."""
    reference = scores[1.0]
    kept = [
        alpha
        for alpha, by_task in scores.items()
        if all(by_task[task] >= reference[task] - tolerance for task in reference)
    ]
    return min(kept)


class LoraScale:
    """Scales a peft transformer's LoRA `B` matrices (so its delta) by alpha, from the values it had when made."""

    def __init__(self, transformer: torch.nn.Module):
        self.parameters = [p for name, p in transformer.named_parameters() if ".lora_B." in name]
        if not self.parameters:
            raise ValueError("WiSE-FT needs a transformer with LoRA adapters (training.mode: lora)")
        self.trained = [p.detach().clone() for p in self.parameters]

    @torch.no_grad()
    def set(self, alpha: float) -> None:
        for parameter, trained in zip(self.parameters, self.trained, strict=True):
            parameter.copy_(trained * alpha)


def interpolate(
    transformer: torch.nn.Module,
    settings: WiseFtSettings,
    validation_scores: Callable[[], dict[str, float]],
    progress: bool = True,
) -> dict:
    """Score every alpha of `settings` with `validation_scores` (task -> validation macro-F1 of the model as it is
    now), leave the transformer at the chosen alpha and return the record kept in the checkpoint:
    {"alpha", "tolerance", "validation_macro_f1": {alpha: {task: score}}}."""
    scale = LoraScale(transformer)
    scores: dict[float, dict[str, float]] = {}
    for alpha in tqdm(settings.alphas, desc="WiSE-FT: scoring alphas on validation", disable=not progress):
        scale.set(alpha)
        scores[alpha] = validation_scores()
        if progress:
            tqdm.write(f"WiSE-FT alpha {alpha}: validation macro-F1 {scores[alpha]}")
    chosen = choose_alpha(scores, settings.tolerance)
    scale.set(chosen)
    if progress:
        tqdm.write(f"WiSE-FT: alpha {chosen} kept (smallest within {settings.tolerance} of alpha 1.0 on every task)")
    return {
        "alpha": chosen,
        "tolerance": settings.tolerance,
        "validation_macro_f1": {str(alpha): by_task for alpha, by_task in scores.items()},
    }
