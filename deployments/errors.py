"""The service's error vocabulary: one closed set of kinds, one table of status codes, one JSON shape.

Every error the service returns is `{"error": "<message>", "error_type": "<kind>"}` (the shape Hugging Face's TEI
uses too), except on the OpenAI-compatible route, `/v1/embeddings`, where it is OpenAI's
`{"error": {"message", "type", "param", "code": "<kind>"}}`, so that the `openai` SDK raises its usual exceptions.
Code raises `ServiceError` (or lets a known exception through, see `to_service_error`); `install_error_handlers`
turns both into that shape, including FastAPI's own validation errors (422; malformed JSON is 400) and unknown
routes (404/405); the middlewares answer through `error_response` with the request's path.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from enum import Enum

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from multitask.errors import EncoderMismatchError

logger = logging.getLogger("ray.serve")


class ErrorKind(str, Enum):
    """What went wrong. The value is the `error_type` clients see."""

    malformed_json = "malformed_json"  # body is not JSON
    unauthorized = "unauthorized"  # auth is on and the bearer token (API key) is missing or wrong
    forbidden = "forbidden"  # the API key may not ask for this task (or route)
    rate_limited = "rate_limited"  # the API key is over its rate limit; retry after `Retry-After` seconds
    body_too_large = "body_too_large"  # body over `max_body_bytes`
    too_many_texts = "too_many_texts"  # more texts than `max_texts_per_request`
    validation_error = "validation_error"  # schema: missing field, wrong type, empty list, extra field
    empty_text = "empty_text"  # a text that is empty or only whitespace
    unknown_task = "unknown_task"  # a task the checkpoint has no head for
    not_found = "not_found"  # no such route
    method_not_allowed = "method_not_allowed"
    overloaded = "overloaded"  # queues full; retry later
    unavailable = "unavailable"  # a deployment cannot answer (starting, restarting, unhealthy)
    timeout = "timeout"  # the graph did not answer within `request_timeout_s`
    encoder_mismatch = "encoder_mismatch"  # heads and encoder disagree (mid-rollout); retry later
    internal_error = "internal_error"  # a server fault; the log has the traceback


STATUS_CODES: dict[ErrorKind, int] = {
    ErrorKind.malformed_json: 400,
    ErrorKind.unauthorized: 401,
    ErrorKind.forbidden: 403,
    ErrorKind.rate_limited: 429,
    ErrorKind.body_too_large: 413,
    ErrorKind.too_many_texts: 413,
    ErrorKind.validation_error: 422,
    ErrorKind.empty_text: 422,
    ErrorKind.unknown_task: 422,
    ErrorKind.not_found: 404,
    ErrorKind.method_not_allowed: 405,
    ErrorKind.overloaded: 503,
    ErrorKind.unavailable: 503,
    ErrorKind.timeout: 503,
    ErrorKind.encoder_mismatch: 503,
    ErrorKind.internal_error: 500,
}

RETRY_AFTER_S = 1
"""`Retry-After` sent with every 503: the condition is transient (load, restart, rollout)."""


class ServiceError(Exception):
    """An error with a kind from the vocabulary. Raised to HTTP clients and handle callers alike. `retry_after_s`:
    when to retry (429 rate_limited; 503s say RETRY_AFTER_S)."""

    def __init__(self, kind: ErrorKind, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def status_code(self) -> int:
        return STATUS_CODES[self.kind]

    def __reduce__(self):  # keep kind, message and retry time when Ray ships the error to a handle caller
        return (ServiceError, (self.kind, self.message, self.retry_after_s))


OPENAI_ROUTE = "/v1/embeddings"
"""The route whose errors take OpenAI's shape (matched at the end of the path, whatever the route prefix)."""


def error_response(kind: ErrorKind, message: str, path: str = "", retry_after_s: float | None = None) -> JSONResponse:
    """The error shape of `path`'s route, with `Retry-After` on 503 and 429 (whole seconds, rounded up: 429 gives
    `retry_after_s`) and `WWW-Authenticate` on 401."""
    status = STATUS_CODES[kind]
    headers = None
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S)}
    if status == 429:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after_s or RETRY_AFTER_S)))}
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="multitask"'}
    if path.endswith(OPENAI_ROUTE):
        body: dict = {"error": openai_error(kind, message)}
    else:
        body = {"error": message, "error_type": kind.value}
    return JSONResponse(body, status_code=status, headers=headers)


def openai_error(kind: ErrorKind, message: str) -> dict:
    """OpenAI's error object: `type` is its coarse class (`invalid_request_error` for the client's mistakes,
    `server_error` for ours), `code` the kind from this vocabulary."""
    kind_of_error = "invalid_request_error" if STATUS_CODES[kind] < 500 else "server_error"
    return {"message": message, "type": kind_of_error, "param": None, "code": kind.value}


def to_service_error(exc: BaseException) -> ServiceError:
    """Map an exception raised while calling the graph to the vocabulary (unknown ones are server faults)."""
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc  # the replica's own error
    if isinstance(cause, ServiceError):
        return ServiceError(cause.kind, cause.message)
    if isinstance(cause, BackPressureError):
        return ServiceError(ErrorKind.overloaded, "The service is overloaded; retry after a short wait.")
    if isinstance(cause, EncoderMismatchError):
        return ServiceError(ErrorKind.encoder_mismatch, f"{cause} A rollout is probably under way; retry shortly.")
    if isinstance(cause, DeploymentUnavailableError) or replica_died(exc):
        return ServiceError(ErrorKind.unavailable, "A deployment of the service is unavailable; retry shortly.")
    if isinstance(cause, (TimeoutError, asyncio.TimeoutError)):
        return ServiceError(ErrorKind.timeout, "The service did not answer in time; retry shortly.")
    logger.error("Unexpected error while serving a request", exc_info=exc)
    return ServiceError(ErrorKind.internal_error, "Internal server error; the service log has the details.")


def replica_died(exc: BaseException) -> bool:
    """The replica serving a call died or became unreachable (killed, crashed, node lost): the controller starts a
    replacement, so the call can be retried."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError))


REQUEST_CHECK = "request_check"
"""Pydantic error type of the request models' own checks (`schemas.py`), which carry a kind of this vocabulary."""


def request_check_error(kind: ErrorKind, message: str) -> PydanticCustomError:
    """A request model's check that failed, as pydantic wants it raised; `describe_errors` gives back its kind and
    message unchanged."""
    return PydanticCustomError(REQUEST_CHECK, "{message}", {"kind": kind.value, "message": message})


def describe_errors(errors: list[dict]) -> tuple[ErrorKind, str]:
    """Pydantic's (or FastAPI's) list of validation errors -> one kind and one readable message."""
    if any(error.get("type") == "json_invalid" for error in errors):
        return ErrorKind.malformed_json, "Request body is not valid JSON."
    for error in errors:
        if error.get("type") == REQUEST_CHECK:
            return ErrorKind(error["ctx"]["kind"]), error["msg"]
    parts = []
    for error in errors[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return ErrorKind.validation_error, "; ".join(parts)


_HTTP_KINDS = {
    400: ErrorKind.malformed_json,
    404: ErrorKind.not_found,
    405: ErrorKind.method_not_allowed,
    413: ErrorKind.body_too_large,
}


def install_error_handlers(app: FastAPI, record: Callable[[ErrorKind], None] | None = None) -> None:
    """Make every error leaving `app` take the one JSON shape. `record(kind)` is called for the errors that
    arise in the HTTP layer itself (schema, body, routing, unexpected); `ServiceError`s are counted where raised."""

    def answer(request: Request, kind: ErrorKind, message: str) -> JSONResponse:
        if record is not None:
            record(kind)
        return error_response(kind, message, request.url.path)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.kind, exc.message, request.url.path, exc.retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(request, *describe_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_KINDS.get(exc.status_code)
        if kind is None:
            kind = ErrorKind.validation_error if exc.status_code < 500 else ErrorKind.internal_error
        return answer(request, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error = to_service_error(exc)
        return answer(request, error.kind, error.message)
