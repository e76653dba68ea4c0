"""The HTTP face of the ingress: routes of the v1 contract and the client-compatible ones (OpenAI embeddings,
Hugging Face text-classification), the page at `/`, the body-size limit, bearer-token auth, the error shapes.

`create_app(service)` builds the FastAPI (Starlette) app around an `Ingress` instance; each route validates the
body with pydantic models (`schemas.py`, `openai_compat.py`, `hf_compat.py`, which also generate /openapi.json) and
calls the same method that Python handle callers use, so HTTP and handles return the same shapes.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
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

if TYPE_CHECKING:
    from deployments.ingress import Ingress

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
    `max_bytes()` are refused with 413: by Content-Length up front, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: Callable[[], int], on_reject: Callable[[ErrorKind], None]):
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_bytes()
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
    """Optional bearer-token auth: when `token()` is not None, every route but the open ones (`/healthz`, for load
    balancers and Serve; `/`, the page, which holds no data and asks for the token to call the API) needs
    `Authorization: Bearer <token>`, compared in constant time; else 401."""

    OPEN_PATHS = frozenset({"/healthz", "/"})

    def __init__(self, app: ASGIApp, token: Callable[[], bytes | None], on_reject: Callable[[ErrorKind], None]):
        self.app = app
        self.token = token
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.token()
        if scope["type"] != "http" or token is None or scope.get("path") in self.OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token):
            return await self.app(scope, receive, send)
        self.on_reject(ErrorKind.unauthorized)
        message = "Missing or wrong bearer token: send the header `Authorization: Bearer <token>`."
        return await error_response(ErrorKind.unauthorized, message, scope["path"])(scope, receive, send)


def create_app(service: Ingress) -> FastAPI:
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="One shared sentence encoder, one head per task. Every error is "
        '`{"error": str, "error_type": str}` (OpenAI\'s `{"error": {"message", "type", "param", "code"}}` on '
        "`/v1/embeddings`); 503 responses carry `Retry-After`. `GET /` is a page to try it.",
        redoc_url=None,
    )
    install_error_handlers(app, record=service.count_http_error)
    app.add_middleware(
        JsonBodyGuard, max_bytes=lambda: service.limits.max_body_bytes, on_reject=service.count_http_error
    )
    # added last = runs first: an unauthenticated request is refused before its body is read
    app.add_middleware(BearerAuth, token=lambda: service.auth_token, on_reject=service.count_http_error)

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


__all__ = ["BearerAuth", "JsonBodyGuard", "create_app"]
