"""OpenAI's embeddings API (`POST /v1/embeddings`), so that the `openai` SDK and the tools built on it work unchanged:

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="<the bearer token, or anything when auth is off>")
    client.embeddings.create(model="multitask", input=["a sentence", "another"]).data[0].embedding   # embedding_dim floats

Request and response follow OpenAI's shapes; the embeddings are the shared encoder's, unit-normalized as OpenAI's
are. The SDK asks for `base64` unless told otherwise (little-endian float32, which it decodes itself). The request's
`model` is accepted and not checked (one graph serves one model); the response's `model` names the checkpoint
that answered. Errors on this route take OpenAI's shape (`deployments/errors.py`).
"""

from __future__ import annotations

import base64
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from deployments.errors import ErrorKind, ServiceError, request_check_error
from deployments.schemas import TextsRequest


class OpenAIEmbeddingsRequest(TextsRequest):
    """Body of `POST /v1/embeddings` (OpenAI's embeddings request)."""

    TEXTS_FIELD: ClassVar[str] = "input"

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (at most `max_texts_per_request`). Token-id arrays are refused: this "
        "encoder's tokenizer is not OpenAI's.",
        examples=[["The new phone ships with a faster chip."]],
    )
    model: str | None = Field(default=None, description="Accepted and not checked: one graph serves one model.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="`float`: lists of numbers; `base64`: little-endian float32 bytes, base64."
    )
    dimensions: int | None = Field(
        default=None, gt=0, description="Must equal the embedding size (`embedding_dim`): embeddings are not cut."
    )
    user: str | None = Field(default=None, description="Accepted and ignored.")

    def request_texts(self) -> list[str]:
        """The texts to embed; token ids are refused (this encoder's tokenizer is not OpenAI's)."""
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise request_check_error(ErrorKind.validation_error, "input: an empty list; send at least one text.")
        if not all(isinstance(text, str) for text in texts):
            raise request_check_error(
                ErrorKind.validation_error,
                "input: token ids are not accepted (this encoder's tokenizer is not OpenAI's); send the text instead.",
            )
        return texts


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="Position of the text in `input`.")
    embedding: list[float] | str = Field(description="Unit-normalized; a base64 string with `encoding_format=base64`.")


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens the encoder read (after truncation, special tokens included).")
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding] = Field(description="One embedding per text, in input order.")
    model: str = Field(description="The checkpoint that answered.")
    usage: OpenAIUsage


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="`invalid_request_error` (4xx) or `server_error` (5xx).")
    param: str | None = None
    code: str = Field(description="The error kind (deployments/errors.py), e.g. `validation_error`.")


class OpenAIErrorResponse(BaseModel):
    """Every error of `/v1/embeddings`, in OpenAI's shape."""

    error: OpenAIError


def check_dimensions(dimensions: int | None, embedding_dim: int) -> None:
    """Refuse an embedding size other than the model's: embeddings are not cut."""
    if dimensions is not None and dimensions != embedding_dim:
        raise ServiceError(
            ErrorKind.validation_error,
            f"dimensions: {dimensions} is not available; this model's embeddings have {embedding_dim} dimensions. "
            f"Omit `dimensions` or send {embedding_dim}.",
        )


def embeddings_response(embeddings: np.ndarray, token_counts: list[int], encoding_format: str, model: str) -> dict:
    """OpenAI's response for (n, dimension) unit-normalized embeddings, in input order."""
    if encoding_format == "base64":
        vectors: list = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in embeddings]
    else:
        vectors = embeddings.tolist()
    tokens = int(sum(token_counts))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
