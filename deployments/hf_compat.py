"""Hugging Face text-classification per task (`POST /v1/classify/{task}`), so that `huggingface_hub`'s client works
unchanged against one task of the service:

    from huggingface_hub import InferenceClient
    client = InferenceClient(model="http://127.0.0.1:8000/v1/classify/topic")
    client.text_classification("The striker scored twice.")   # [TextClassificationOutputElement(label=..., score=...)]

The request is the Inference API's `{"inputs": str | [str], "parameters": {"top_k"?}}`; the answer is one list of
`{"label", "score"}` per input, best first, as the Inference API and TEI give it (the client reads the first list
for a single input). Scores are the head's calibrated probabilities; errors keep the v1 shape, which is TEI's.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from deployments.schemas import TextsRequest

_TEXTS = Annotated[list[str], Field(min_length=1)]


class ClassifyParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    top_k: int | None = Field(default=None, gt=0, description="Keep the k best labels; omitted = every label.")
    function_to_apply: Literal["softmax"] | None = Field(
        default=None, description="Only `softmax`: the scores are the head's (calibrated) softmax probabilities."
    )


class ClassifyRequest(TextsRequest):
    """Body of `POST /v1/classify/{task}` (Hugging Face text-classification)."""

    TEXTS_FIELD: ClassVar[str] = "inputs"

    inputs: str | _TEXTS = Field(
        description="A text or a list of texts (at most `max_texts_per_request`), truncated like every text.",
        examples=["The striker scored twice in the final."],
    )
    parameters: ClassifyParameters = Field(default_factory=ClassifyParameters)

    def request_texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Calibrated probability of the label.")


class ClassifyResponse(RootModel[list[list[LabelScore]]]):
    """One list per input, in input order, each sorted by score, best first."""


def ranked(scores: dict[str, float], top_k: int | None) -> list[dict]:
    """A task result's `scores` -> `[{"label", "score"}, ...]`, best first, the first `top_k` (all when None)."""
    order = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    return [{"label": label, "score": score} for label, score in order[:top_k]]
