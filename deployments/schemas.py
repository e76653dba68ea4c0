"""Pydantic models of the HTTP contract (they generate /openapi.json) and of the runtime knobs (`user_config`).

Limits that can change at runtime (texts per request, characters per text, body size) live in `Limits`, the
ingress's `user_config`, and are checked by the ingress, not here: a schema error here is always a 422.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_EXAMPLE_TEXTS = ["The new phone ships with a faster chip.", "Stocks fell sharply after the announcement."]


# --- requests ---------------------------------------------------------------------------------------------------
class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] = Field(
        min_length=1,
        description="Texts to process, at most `max_texts_per_request` (default 64), each non-empty, of any length "
        "within the body limit. Texts over the encoder's token window (or `max_chars_per_text`, default 100000) are "
        "truncated and flagged `truncated`.",
        examples=[_EXAMPLE_TEXTS],
    )


class TaskPredictRequest(_Request):
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


class EmbedRequest(_Request):
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
    tasks: list[TaskInfo]
    model: ModelInfo


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])
    deployments: dict[str, str] = Field(description="Each deployment's answer to a ping.")


class ErrorResponse(BaseModel):
    """Every error the service returns."""

    error: str = Field(description="What went wrong, for a human.")
    error_type: str = Field(
        description="The error kind, for code: see deployments/errors.py.", examples=["unknown_task"]
    )


# --- runtime knobs (user_config) ----------------------------------------------------------------------------------
class Limits(BaseModel):
    """The ingress's `user_config`: request limits, overload shedding and optional bearer-token auth, changed by
    redeploying the config without a restart. With neither `auth_token_env` nor `auth_token_file`, auth is off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_texts_per_request: int = Field(default=64, gt=0, description="More texts -> 413 too_many_texts.")
    max_chars_per_text: int = Field(
        default=100_000,
        gt=0,
        description="Characters of a text the service reads; the rest is dropped and the text flagged `truncated` "
        "(the encoder reads at most its token window anyway). Never an error: bodies are bounded by max_body_bytes.",
    )
    max_body_bytes: int = Field(default=1_048_576, gt=0, description="Larger body -> 413 body_too_large.")
    request_timeout_s: float = Field(default=30.0, gt=0, description="Graph answer deadline -> 503 timeout.")
    health_timeout_s: float = Field(default=5.0, gt=0, description="Per-deployment ping deadline in /healthz.")
    max_inflight_requests: int = Field(
        default=96,
        gt=0,
        description="Requests one ingress replica works on at once; more -> 503 overloaded with Retry-After at once. "
        "Keep it below the Ingress's max_ongoing_requests, so that the ingress sheds load before Serve's proxy queues.",
    )
    auth_token_env: str | None = Field(
        default=None, description="Bearer-token auth: the environment variable (of the ingress replica) holding it."
    )
    auth_token_file: str | None = Field(
        default=None, description="Bearer-token auth: a file holding it (read at deploy time; whitespace stripped)."
    )


class EncoderSettings(BaseModel):
    """The encoder's `user_config`: dynamic batching and CPU threads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(
        default=32, gt=0, description="Texts per forward pass, across requests (batches form without waiting)."
    )
    max_batch_tokens: int = Field(
        default=4096, ge=0, description="Padded tokens per forward pass (texts x longest); 0 = no limit."
    )
    threads: int = Field(
        default=0, ge=0, description="CPU threads of a forward pass (onnxruntime or torch intra-op); 0 = the default."
    )


class HeadSettings(BaseModel):
    """A head's `user_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int = Field(default=1, ge=0, description="BLAS threads of the (numpy) head MLP; 0 = leave as is.")


# --- what flows between deployments -----------------------------------------------------------------------------
@dataclass
class EncodedTexts:
    """Encoder -> heads and ingress: embeddings of one request's texts, in input order."""

    embeddings: np.ndarray  # (n_texts, embedding_dim) float32
    truncated: list[bool] = field(default_factory=list)  # per text: cut to the encoder's max tokens
    fingerprint: str = ""  # the encoder that produced them; heads refuse other encoders
    token_counts: list[int] = field(default_factory=list)  # per text: tokens the encoder read (specials included)
