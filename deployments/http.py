"""The HTTP face of the ingress: routes of the v1 contract and the client-compatible ones (OpenAI embeddings,
Hugging Face text-classification), the page at `/`, the body-size limit, bearer-token auth, the error shapes.

`create_app(service)` builds the FastAPI (Starlette) app around anything that implements `IngressApi` (the `Ingress`
deployment; tests use a small fake). Each route validates the body's shape with pydantic models (`schemas.py`,
`openai_compat.py`, `hf_compat.py`, which also generate /openapi.json) and calls the same method that Python handle
callers use, which checks the texts, so HTTP and handles return the same shapes and errors.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.errors import STATUS_CODES, ErrorKind, error_response, install_error_handlers
from deployments.hf_compat import ClassifyRequest, ClassifyResponse
from deployments.openai_compat import OpenAIEmbeddingsRequest, OpenAIEmbeddingsResponse, OpenAIErrorResponse
from deployments.page import page_response
from deployments.schemas import (
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    TaskPredictRequest,
    TasksResponse,
)


class HttpSettings(BaseModel):
    """The HTTP layer's part of the Ingress's `user_config`: the body limit and where the bearer token comes from.
    With neither `auth_token_env` nor `auth_token_file`, auth is off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(default=1_048_576, gt=0, description="Larger body -> 413 body_too_large.")
    auth_token_env: str | None = Field(
        default=None, description="Bearer-token auth: the environment variable (of the ingress replica) holding it."
    )
    auth_token_file: str | None = Field(
        default=None, description="Bearer-token auth: a file holding it (read at deploy time; whitespace stripped)."
    )

    def http_policy(self) -> HttpPolicy:
        """The settings with the token read (raises ValueError if it is named but not there: the deploy fails)."""
        return HttpPolicy(max_body_bytes=self.max_body_bytes, bearer_token=self.read_token())

    def read_token(self) -> bytes | None:
        """The bearer token the config names (environment variable or file), or None when auth is off. A token that is
        named but missing or empty is an error: failing the deploy beats serving without the auth that was asked for."""
        if self.auth_token_env and self.auth_token_file:
            raise ValueError("Ingress user_config: set auth_token_env or auth_token_file, not both.")
        if self.auth_token_env:
            token = os.environ.get(self.auth_token_env, "").strip()
            where = f"environment variable {self.auth_token_env} (set it in the application's runtime_env.env_vars)"
        elif self.auth_token_file:
            path = Path(self.auth_token_file).expanduser()
            try:
                token = path.read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"Ingress auth_token_file {path} cannot be read ({exc}); create it on every node."
                ) from exc
            where = f"file {path}"
        else:
            return None
        if not token:
            raise ValueError(f"Ingress bearer-token auth is on but the {where} is empty or unset; put the token there.")
        return token.encode()


@dataclass(frozen=True)
class HttpPolicy:
    """What the HTTP layer enforces before a route runs, as of the last reconfigure."""

    max_body_bytes: int
    bearer_token: bytes | None  # None = auth off


class IngressApi(Protocol):
    """What the HTTP app needs of the ingress: its current policy, a counter for the errors the HTTP layer answers
    itself, and the methods the routes call (the same ones handle callers call)."""

    http_policy: HttpPolicy

    def count_http_error(self, kind: ErrorKind) -> None: ...

    async def predict(
        self, texts: list[str], tasks: list[str] | None = None, return_embeddings: bool = False
    ) -> dict: ...

    async def embed(self, texts: list[str], normalize: bool = True) -> dict: ...

    async def openai_embeddings(
        self,
        input: str | list[str],
        model: str | None = None,
        encoding_format: str = "float",
        dimensions: int | None = None,
        user: str | None = None,
    ) -> dict: ...

    async def classify(self, task: str, inputs: str | list[str], top_k: int | None = None) -> list[list[dict]]: ...

    def tasks(self) -> dict: ...

    async def health(self) -> dict: ...


API_TITLE = "multitask: topic and sentiment classification"
API_VERSION = "1.0.0"


def _errors(*kinds: ErrorKind, model: type = ErrorResponse) -> dict:
    """OpenAPI `responses` entries for the error kinds a route can return, in the error shape `model`."""
    responses: dict = {}
    for kind in kinds:
        entry = responses.setdefault(STATUS_CODES[kind], {"model": model, "description": ""})
        entry["description"] = ", ".join(filter(None, [entry["description"], kind.value]))
    return responses


_BODY_ERRORS = (
    ErrorKind.malformed_json,
    ErrorKind.unauthorized,
    ErrorKind.body_too_large,
    ErrorKind.too_many_texts,
    ErrorKind.validation_error,
    ErrorKind.empty_text,
    ErrorKind.overloaded,
    ErrorKind.internal_error,
)


class JsonBodyGuard:
    """Every body is JSON, whatever its Content-Type says (`curl -d` sends form-urlencoded), and bodies over
    `max_body_bytes` are refused with 413: by Content-Length up front, else while the body streams in."""

    def __init__(self, app: ASGIApp, policy: Callable[[], HttpPolicy], on_reject: Callable[[ErrorKind], None]):
        self.app = app
        self.policy = policy
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.policy().max_body_bytes
        message = f"Request body is larger than the limit of {limit} bytes."
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
        length = dict(headers).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            self.on_reject(ErrorKind.body_too_large)
            return await error_response(ErrorKind.body_too_large, message, scope["path"])(scope, receive, send)
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:  # raised inside the route's body read: the error handlers answer 413
                    raise HTTPException(413, message)
            return msg

        await self.app(scope, counting_receive, send)


class BearerAuth:
    """Optional bearer-token auth: when the policy has a token, every route but the open ones (`/healthz`, for load
    balancers and Serve; `/`, the page, which holds no data and asks for the token to call the API) needs
    `Authorization: Bearer <token>`, compared in constant time; else 401."""

    OPEN_PATHS = frozenset({"/healthz", "/"})

    def __init__(self, app: ASGIApp, policy: Callable[[], HttpPolicy], on_reject: Callable[[ErrorKind], None]):
        self.app = app
        self.policy = policy
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.policy().bearer_token
        if scope["type"] != "http" or token is None or scope.get("path") in self.OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token):
            return await self.app(scope, receive, send)
        self.on_reject(ErrorKind.unauthorized)
        message = "Missing or wrong bearer token: send the header `Authorization: Bearer <token>`."
        return await error_response(ErrorKind.unauthorized, message, scope["path"])(scope, receive, send)


def create_app(service: IngressApi) -> FastAPI:
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="One shared sentence encoder, one head per task. Every error is "
        '`{"error": str, "error_type": str}` (OpenAI\'s `{"error": {"message", "type", "param", "code"}}` on '
        "`/v1/embeddings`); 503 responses carry `Retry-After`. `GET /` is a page to try it.",
        redoc_url=None,
    )
    install_error_handlers(app, record=service.count_http_error)
    app.add_middleware(JsonBodyGuard, policy=lambda: service.http_policy, on_reject=service.count_http_error)
    # added last = runs first: an unauthenticated request is refused before its body is read
    app.add_middleware(BearerAuth, policy=lambda: service.http_policy, on_reject=service.count_http_error)

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=_errors(*_BODY_ERRORS, ErrorKind.unknown_task),
        summary="Classify texts with every task, or the tasks asked for",
    )
    async def predict(body: PredictRequest) -> JSONResponse:
        return JSONResponse(await service.predict(body.texts, body.tasks, body.return_embeddings))

    @app.post(
        "/v1/predict/{task}",
        response_model=PredictResponse,
        responses=_errors(*_BODY_ERRORS, ErrorKind.unknown_task),
        summary="Classify texts with one task",
    )
    async def predict_task(task: str, body: TaskPredictRequest) -> JSONResponse:
        return JSONResponse(await service.predict(body.texts, [task], body.return_embeddings))

    @app.post(
        "/v1/embed",
        response_model=EmbedResponse,
        responses=_errors(*_BODY_ERRORS),
        summary="Shared sentence embeddings (`embedding_dim` floats each, see GET /v1/tasks)",
    )
    async def embed(body: EmbedRequest) -> JSONResponse:
        return JSONResponse(await service.embed(body.texts, body.normalize))

    @app.post(
        "/v1/embeddings",
        response_model=OpenAIEmbeddingsResponse,
        responses=_errors(*_BODY_ERRORS, model=OpenAIErrorResponse),
        summary="OpenAI-compatible embeddings (the `openai` SDK's embeddings.create)",
    )
    async def openai_embeddings(body: OpenAIEmbeddingsRequest) -> JSONResponse:
        return JSONResponse(await service.openai_embeddings(**body.model_dump()))

    @app.post(
        "/v1/classify/{task}",
        response_model=ClassifyResponse,
        responses=_errors(*_BODY_ERRORS, ErrorKind.unknown_task),
        summary="Hugging Face text-classification with one task (huggingface_hub's InferenceClient, TEI's shape)",
    )
    async def classify(task: str, body: ClassifyRequest) -> JSONResponse:
        return JSONResponse(await service.classify(task, body.inputs, body.parameters.top_k))

    @app.get(
        "/v1/tasks",
        response_model=TasksResponse,
        responses=_errors(ErrorKind.unauthorized),
        summary="Tasks, their labels and evaluation metrics",
    )
    async def tasks() -> JSONResponse:
        return JSONResponse(service.tasks())

    @app.get(
        "/healthz",
        response_model=HealthResponse,
        responses=_errors(ErrorKind.unavailable),
        summary="200 when every deployment answers, else 503",
    )
    async def healthz() -> JSONResponse:
        return JSONResponse(await service.health())

    @app.get("/", response_class=HTMLResponse, summary="A page to try the model in a browser (calls the v1 API)")
    async def page() -> HTMLResponse:
        return page_response()

    return app


__all__ = ["BearerAuth", "HttpPolicy", "HttpSettings", "IngressApi", "JsonBodyGuard", "create_app"]
