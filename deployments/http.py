"""The HTTP face of the ingress: routes of the v1 contract and the client-compatible ones (OpenAI embeddings,
Hugging Face text-classification), the page at `/`, the body-size limit, API keys (bearer tokens with names, rate
limits and allowed tasks: `api_keys.py`), the error shapes.

`create_app(service)` builds the FastAPI (Starlette) app around anything that implements `IngressApi` (the `Ingress`
deployment; tests use a small fake). Each route validates the body's shape with pydantic models (`schemas.py`,
`openai_compat.py`, `hf_compat.py`, which also generate /openapi.json) and calls the same method that Python handle
callers use, which checks the texts, so HTTP and handles return the same shapes and errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.api_docs import install_api_docs
from deployments.api_keys import ApiKey, KeyTable
from deployments.errors import STATUS_CODES, ErrorKind, ServiceError, error_response, install_error_handlers
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
from deployments.settings import HttpPolicy


class IngressApi(Protocol):
    """What the HTTP app needs of the ingress: its current policy, a counter for the errors the HTTP layer answers
    itself, and the methods the routes call (the same ones handle callers call)."""

    http_policy: HttpPolicy

    def count_http_error(self, kind: ErrorKind) -> None: ...

    def count_key_request(self, key: str, status: int, texts: int) -> None: ...

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

    async def tasks(self) -> dict: ...

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
    ErrorKind.forbidden,
    ErrorKind.rate_limited,
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


class KeyUse:
    """What a request did with its API key: set by `ApiKeyAuth`, filled in by the route's `admit`."""

    def __init__(self, key: ApiKey, keys: KeyTable):
        self.key = key
        self.keys = keys
        self.texts = 0


class ApiKeyAuth:
    """When the policy has keys, every route but the open ones (`/healthz`, for load balancers and Serve; `/`, the
    page, which holds no data and asks for a key to call the API) needs `Authorization: Bearer <key>` (how the
    `openai` SDK and huggingface_hub send theirs) with a key of the table, else 401. The key goes to the route
    (`admit`: its tasks and rate limits) in the scope's state; each request is counted under the key's name."""

    OPEN_PATHS = frozenset({"/healthz", "/"})

    def __init__(
        self,
        app: ASGIApp,
        policy: Callable[[], HttpPolicy],
        on_reject: Callable[[ErrorKind], None],
        on_done: Callable[[str, int, int], None],
    ):
        self.app = app
        self.policy = policy
        self.on_reject = on_reject
        self.on_done = on_done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        keys = self.policy().keys
        if scope["type"] != "http" or keys is None or scope.get("path") in self.OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        key = keys.identify(given.strip()) if scheme.lower() == b"bearer" else None
        if key is None:
            self.on_reject(ErrorKind.unauthorized)
            message = "Missing or wrong API key: send the header `Authorization: Bearer <key>`."
            return await error_response(ErrorKind.unauthorized, message, scope["path"])(scope, receive, send)
        use = KeyUse(key, keys)
        status = 500

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app({**scope, "state": {**scope.get("state", {}), "api_key": use}}, receive, noting_send)
        finally:
            self.on_done(key.name, status, use.texts)


def admit(request: Request, texts: int, tasks: list[str] | None = None, embeddings: bool = False) -> list[str] | None:
    """The request's API key (if auth is on) may do this: ask for `tasks` (None = every task, which for a key with
    a task list means its tasks; returned), call an embeddings route, and send `texts` texts now. Else 403
    forbidden, or 429 rate_limited with the seconds until it may (never queued)."""
    use: KeyUse | None = request.scope.get("state", {}).get("api_key")
    if use is None:
        return tasks
    spec = use.key.spec
    if embeddings and not spec.embeddings:
        raise ServiceError(ErrorKind.forbidden, f"API key {spec.name!r} may not call the embeddings routes.")
    if tasks is None and spec.tasks is not None:
        tasks = list(spec.tasks)
    refused = use.key.refused_tasks(tasks or [])
    if refused:
        raise ServiceError(
            ErrorKind.forbidden,
            f"API key {spec.name!r} may not ask for task {refused[0]!r}; its tasks: {list(spec.tasks)}.",
        )
    wait = use.keys.admit(use.key, texts)
    if wait > 0:
        raise ServiceError(
            ErrorKind.rate_limited,
            f"API key {spec.name!r} is over its rate limit; retry after {wait:.2f} s.",
            retry_after_s=wait,
        )
    use.texts = texts
    return tasks


def _count(texts: str | list[str]) -> int:
    return 1 if isinstance(texts, str) else len(texts)


def create_app(service: IngressApi) -> FastAPI:
    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="One shared sentence encoder, one head per task. Every error is "
        '`{"error": str, "error_type": str}` (OpenAI\'s `{"error": {"message", "type", "param", "code"}}` on '
        "`/v1/embeddings`); 503 responses carry `Retry-After`. `GET /` is a page to try it.",
        docs_url=None,  # served by install_api_docs, without a CDN
        redoc_url=None,
    )
    install_api_docs(app)
    install_error_handlers(app, record=service.count_http_error)
    app.add_middleware(JsonBodyGuard, policy=lambda: service.http_policy, on_reject=service.count_http_error)
    # added last = runs first: an unauthenticated request is refused before its body is read
    app.add_middleware(
        ApiKeyAuth,
        policy=lambda: service.http_policy,
        on_reject=service.count_http_error,
        on_done=service.count_key_request,
    )

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=_errors(*_BODY_ERRORS, ErrorKind.unknown_task),
        summary="Classify texts with every task, or the tasks asked for",
    )
    async def predict(request: Request, body: PredictRequest) -> JSONResponse:
        tasks = admit(request, len(body.texts), body.tasks)
        return JSONResponse(await service.predict(body.texts, tasks, body.return_embeddings))

    @app.post(
        "/v1/predict/{task}",
        response_model=PredictResponse,
        responses=_errors(*_BODY_ERRORS, ErrorKind.unknown_task),
        summary="Classify texts with one task",
    )
    async def predict_task(request: Request, task: str, body: TaskPredictRequest) -> JSONResponse:
        admit(request, len(body.texts), [task])
        return JSONResponse(await service.predict(body.texts, [task], body.return_embeddings))

    @app.post(
        "/v1/embed",
        response_model=EmbedResponse,
        responses=_errors(*_BODY_ERRORS),
        summary="Shared sentence embeddings (`embedding_dim` floats each, see GET /v1/tasks)",
    )
    async def embed(request: Request, body: EmbedRequest) -> JSONResponse:
        admit(request, len(body.texts), embeddings=True)
        return JSONResponse(await service.embed(body.texts, body.normalize))

    @app.post(
        "/v1/embeddings",
        response_model=OpenAIEmbeddingsResponse,
        responses=_errors(*_BODY_ERRORS, model=OpenAIErrorResponse),
        summary="OpenAI-compatible embeddings (the `openai` SDK's embeddings.create)",
    )
    async def openai_embeddings(request: Request, body: OpenAIEmbeddingsRequest) -> JSONResponse:
        admit(request, _count(body.input), embeddings=True)
        return JSONResponse(await service.openai_embeddings(**body.model_dump()))

    @app.post(
        "/v1/classify/{task}",
        response_model=ClassifyResponse,
        responses=_errors(*_BODY_ERRORS, ErrorKind.unknown_task),
        summary="Hugging Face text-classification with one task (huggingface_hub's InferenceClient, TEI's shape)",
    )
    async def classify(request: Request, task: str, body: ClassifyRequest) -> JSONResponse:
        admit(request, _count(body.inputs), [task])
        return JSONResponse(await service.classify(task, body.inputs, body.parameters.top_k))

    @app.get(
        "/v1/tasks",
        response_model=TasksResponse,
        responses=_errors(ErrorKind.unauthorized),
        summary="Tasks, their labels and evaluation metrics",
    )
    async def tasks() -> JSONResponse:
        return JSONResponse(await service.tasks())

    @app.get(
        "/healthz",
        response_model=HealthResponse,
        responses=_errors(ErrorKind.unavailable),
        summary="200 when the encoder and every ready head answer, else 503",
    )
    async def healthz() -> JSONResponse:
        return JSONResponse(await service.health())

    @app.get("/", response_class=HTMLResponse, summary="A page to try the model in a browser (calls the v1 API)")
    async def page() -> HTMLResponse:
        return page_response()

    return app


__all__ = ["ApiKeyAuth", "IngressApi", "JsonBodyGuard", "admit", "create_app"]
