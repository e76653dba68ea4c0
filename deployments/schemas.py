"""The v1 HTTP contract as pydantic models (they generate /openapi.json), and the checks every request's texts pass.

A request is validated twice on its way in. FastAPI checks the body against the route's model, without context:
its shape only. Then the ingress method that the route calls, and that handle callers call directly, validates its
arguments with the same model and the ingress's `TextLimits` as pydantic context (`parse_request`): the shape
again, then the texts (how many, not empty, valid Unicode, cut to `max_chars_per_text`). So HTTP and handle callers
get the same checks, error kinds and messages, written once here.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, model_validator

from deployments.errors import ErrorKind, ServiceError, describe_errors, request_check_error
from deployments.settings import TextLimits

_EXAMPLE_TEXTS = ["The new phone ships with a faster chip.", "Stocks fell sharply after the announcement."]


# --- the texts of a request ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckedTexts:
    """A request's texts after the checks: what to encode, in order, and which of them were cut."""

    texts: list[str]
    clipped: list[bool]  # per text: cut to max_chars_per_text (its result says `truncated`)


class TextsRequest(BaseModel):
    """A request that carries texts (v1's `texts`, OpenAI's `input`, Hugging Face's `inputs`). Validated with
    `TextLimits` as context, it checks them too and keeps the result in `checked`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    TEXTS_FIELD: ClassVar[str] = "texts"
    _checked: CheckedTexts | None = PrivateAttr(default=None)

    def request_texts(self) -> list[str]:
        """The request's texts as a list; refuses what the request's own shape allows but the service does not."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _check_texts(self, info: ValidationInfo) -> Self:
        if isinstance(info.context, TextLimits):
            self._checked = check_texts(self.request_texts(), self.TEXTS_FIELD, info.context)
        return self

    @property
    def checked(self) -> CheckedTexts:
        if self._checked is None:
            raise RuntimeError(f"{type(self).__name__} was validated without TextLimits; use parse_request")
        return self._checked


def check_texts(texts: list[str], field: str, limits: TextLimits) -> CheckedTexts:
    """Refuse too many texts, empty ones and invalid Unicode; cut each text to `max_chars_per_text` characters."""
    if len(texts) > limits.max_texts_per_request:
        raise request_check_error(
            ErrorKind.too_many_texts,
            f"{len(texts)} texts in one request; the limit is {limits.max_texts_per_request}. Split the request.",
        )
    for i, text in enumerate(texts):
        if not _has_content(text):
            raise request_check_error(ErrorKind.empty_text, f"{field}[{i}] is empty; every text needs some content.")
        if _has_surrogate(text):
            raise request_check_error(
                ErrorKind.validation_error,
                f"{field}[{i}] holds a lone UTF-16 surrogate (e.g. \\ud800), which is not valid Unicode; "
                "send valid UTF-8 (pairs of surrogate escapes are fine).",
            )
    cut = limits.max_chars_per_text
    return CheckedTexts([text[:cut] for text in texts], [len(text) > cut for text in texts])


def _has_content(text: str) -> bool:
    """Some character besides whitespace, control and format characters (zero-width spaces, BOMs)."""
    return any(not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf") for ch in text)


def _has_surrogate(text: str) -> bool:
    """JSON's `\\ud800` escapes decode to lone surrogates, which no tokenizer (or UTF-8 encoder) accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


RequestT = TypeVar("RequestT", bound=TextsRequest)


def parse_request(request_model: type[RequestT], limits: TextLimits, /, **fields: object) -> RequestT:
    """An ingress method's arguments validated with the route's model and the limits; a refusal is a
    `ServiceError` of the kind the failed check names (422 validation_error for the shape). Positional-only: a
    request may have a field named `model` (OpenAI's)."""
    try:
        return request_model.model_validate(fields, context=limits)
    except ValidationError as exc:
        raise ServiceError(*describe_errors(exc.errors())) from None


# --- requests ---------------------------------------------------------------------------------------------------
class _V1Request(TextsRequest):
    texts: list[str] = Field(
        min_length=1,
        description="Texts to process, at most `max_texts_per_request` (default 64), each non-empty, of any length "
        "within the body limit. Texts over the encoder's token window (or `max_chars_per_text`, default 100000) are "
        "truncated and flagged `truncated`.",
        examples=[_EXAMPLE_TEXTS],
    )

    def request_texts(self) -> list[str]:
        return self.texts


class TaskPredictRequest(_V1Request):
    """Body of `POST /v1/predict/{task}`."""

    return_embeddings: bool = Field(
        default=False, description="Add each text's shared embedding (`embedding_dim` floats) to its result."
    )


class PredictRequest(TaskPredictRequest):
    """Body of `POST /v1/predict`."""

    tasks: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Tasks to run (see GET /v1/tasks); omitted = every task. Only these heads are called.",
        examples=[["topic", "sentiment"]],
    )


class EmbedRequest(_V1Request):
    """Body of `POST /v1/embed`."""

    normalize: bool = Field(default=True, description="Scale each embedding to unit L2 norm.")


# --- responses ----------------------------------------------------------------------------------------------------
class TaskResult(BaseModel):
    label: str = Field(description="The most probable label.")
    confidence: float = Field(description="Calibrated probability of `label`.")
    scores: dict[str, float] = Field(description="Calibrated probability of every label.")


class TextResult(BaseModel):
    """One text's result: one `TaskResult` per asked task, under the task's name (e.g. `topic`, `sentiment`)."""

    model_config = ConfigDict(extra="allow")

    __pydantic_extra__: dict[str, TaskResult] = Field(init=False)
    truncated: bool = Field(description="True when the text was cut to the encoder's max tokens.")
    embedding: list[float] | None = Field(
        default=None, description="Raw shared embedding (`embedding_dim` floats), when asked for."
    )


class ModelInfo(BaseModel):
    encoder: str = Field(description="Encoder id the checkpoint was trained with.")
    fingerprint: str = Field(description="Fingerprint of the encoder the heads were trained against.")
    finetune: str = Field(description="frozen, lora or full.")
    embedding_dim: int
    checkpoint: str = Field(description="Name of the checkpoint directory.")


class PredictResponse(BaseModel):
    results: list[TextResult] = Field(description="One result per text, in input order.")
    model: ModelInfo


class EmbedResponse(BaseModel):
    embeddings: list[list[float]] = Field(description="One embedding per text, in input order.")
    dimension: int
    truncated: list[bool] = Field(description="Per text: cut to the encoder's max tokens.")
    model: ModelInfo


class TaskInfo(BaseModel):
    name: str
    labels: list[str]
    metrics: dict = Field(description="The checkpoint's evaluation metrics for this task (empty if none).")
    calibration: dict = Field(description="The head's temperature calibration (empty if none).")


class TasksResponse(BaseModel):
    tasks: list[TaskInfo] = Field(description="The tasks that answer, in the configured order.")
    starting: list[str] = Field(
        default_factory=list, description="Tasks added whose head does not answer yet (503 unavailable until it does)."
    )
    model: ModelInfo


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])
    deployments: dict[str, str] = Field(
        description="Each deployment's answer to a ping (`starting`: a head of a task added, not answering yet)."
    )


class ErrorResponse(BaseModel):
    """Every error the service returns."""

    error: str = Field(description="What went wrong, for a human.")
    error_type: str = Field(
        description="The error kind, for code: see deployments/errors.py.", examples=["unknown_task"]
    )
