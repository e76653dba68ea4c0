"""The ingress deployment: validates, routes by task, merges results. HTTP and Python handles share its methods.

    handle = serve.get_app_handle("multitask")
    await handle.predict.remote(["a sentence"], tasks=["topic"])   # same dict as POST /v1/predict
    await handle.embed.remote(["a sentence"])                       # same dict as POST /v1/embed
    await handle.openai_embeddings.remote("a sentence")             # same dict as POST /v1/embeddings (OpenAI)
    await handle.classify.remote("topic", "a sentence")             # same list as POST /v1/classify/topic (HF)

Only the heads asked for are called, concurrently; each text goes through the encoder once, whatever the number
of heads, and its embedding is shared by all of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.batcher import ContinuousBatcher
from deployments.errors import ErrorKind, ServiceError, describe_errors, replica_died, to_service_error
from deployments.hf_compat import ClassifyRequest, ranked
from deployments.http import create_app
from deployments.metrics import IngressMetrics
from deployments.openai_compat import OpenAIEmbeddingsRequest, embeddings_response, request_texts
from deployments.schemas import EmbedRequest, EncodedTexts, Limits, PredictRequest
from multitask.manifest import manifest_summary, read_manifest
from multitask.storage import checkpoint_name, locate_checkpoint

logger = logging.getLogger("ray.serve")

BATCH_MAX_TEXTS = 64
"""Texts per gathered batch of requests (a larger request goes alone)."""
BATCHES_IN_FLIGHT = 2


@serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.2},
    max_ongoing_requests=128,
    max_queued_requests=512,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 32},
    user_config=Limits().model_dump(),
)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        checkpoint: str,
        encoder: DeploymentHandle,
        heads: dict[str, DeploymentHandle],
        checkpoint_cache_dir: str | None = None,
    ):
        self.manifest = read_manifest(locate_checkpoint(checkpoint, checkpoint_cache_dir))  # a URI: fetched once
        task_names = self.manifest.model.task_names
        if sorted(heads) != sorted(task_names):
            raise ValueError(f"Heads {sorted(heads)} do not match the checkpoint's tasks {task_names}.")
        self.encoder = encoder
        self.heads = {task: heads[task] for task in task_names}  # checkpoint order = default result order
        self.model_info = {**manifest_summary(self.manifest), "checkpoint": checkpoint_name(checkpoint)}
        self.limits = Limits()
        self.auth_token: bytes | None = None  # bearer-token auth of the HTTP routes (not /healthz); None = off
        self.inflight = 0  # predict/embed calls this replica works on now (shed past limits.max_inflight_requests)
        self.metrics = IngressMetrics()
        # concurrent predict requests share one encoder call and one call per head (`_run_batch`); two batches in
        # flight, so the encoder works on one while the heads answer the other
        self._batcher = ContinuousBatcher(
            self._run_batch, BATCH_MAX_TEXTS, max_in_flight=BATCHES_IN_FLIGHT, size=lambda request: len(request[0])
        )
        logger.info(
            f"multitask ready: POST /v1/predict, /v1/predict/{{task}}, /v1/embed, /v1/embeddings (OpenAI), "
            f"/v1/classify/{{task}} (Hugging Face); GET / (a page to try it), /v1/tasks, /healthz, /openapi.json, "
            f"/docs (tasks {task_names}, checkpoint {checkpoint}), on http_options' host:port "
            "(127.0.0.1:8000 in serve_config.local.yaml; HAProxy there with serve.env, else Serve's proxy)."
        )

    def reconfigure(self, user_config: dict) -> None:
        limits = Limits.model_validate(user_config or {})
        self.auth_token = read_auth_token(limits)  # raises (the deploy fails) if the named token is not there
        self.limits = limits
        logger.info(f"Ingress limits: {limits.model_dump()}; bearer-token auth {'on' if self.auth_token else 'off'}")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self)

    # --- the API, for HTTP routes and handle callers alike ----------------------------------------------------
    async def predict(self, texts: list[str], tasks: list[str] | None = None, return_embeddings: bool = False) -> dict:
        """`POST /v1/predict`: one result per text, in order, with only the asked tasks."""
        with self._observe("predict"), self._admit():
            request = _validate(PredictRequest, texts=texts, tasks=tasks, return_embeddings=return_embeddings)
            texts, clipped = self._check_texts(request.texts)
            tasks = self._check_tasks(request.tasks)
            results = await self._within_deadline(
                lambda: self._predict(texts, clipped, tasks, request.return_embeddings)
            )
            return {"results": results, "model": self.model_info}

    async def embed(self, texts: list[str], normalize: bool = True) -> dict:
        """`POST /v1/embed`: the shared embeddings, unit-normalized unless asked otherwise."""
        with self._observe("embed"), self._admit():
            request = _validate(EmbedRequest, texts=texts, normalize=normalize)
            texts, clipped = self._check_texts(request.texts)
            encoded: EncodedTexts = await self._within_deadline(lambda: self.encoder.encode.remote(texts))
            embeddings = _unit_norm(encoded.embeddings) if request.normalize else encoded.embeddings  # (n, dim)
            return {
                "embeddings": embeddings.tolist(),
                "dimension": int(embeddings.shape[1]),
                "truncated": [cut or flag for cut, flag in zip(clipped, encoded.truncated)],
                "model": self.model_info,
            }

    async def openai_embeddings(
        self,
        input: str | list[str],
        model: str | None = None,
        encoding_format: str = "float",
        dimensions: int | None = None,
        user: str | None = None,
    ) -> dict:
        """`POST /v1/embeddings`: OpenAI's embeddings response (unit-normalized, as OpenAI's are), with
        `usage.prompt_tokens` counted by the encoder's own tokenizer."""
        with self._observe("openai_embeddings"), self._admit():
            request = _validate(
                OpenAIEmbeddingsRequest,
                input=input,
                model=model,
                encoding_format=encoding_format,
                dimensions=dimensions,
                user=user,
            )
            texts, _ = self._check_texts(request_texts(request, self.manifest.model.embedding_dim), field="input")
            encoded: EncodedTexts = await self._within_deadline(lambda: self.encoder.encode.remote(texts))
            return embeddings_response(
                _unit_norm(encoded.embeddings),
                encoded.token_counts,
                request.encoding_format,
                self.model_info["checkpoint"],
            )

    async def classify(self, task: str, inputs: str | list[str], top_k: int | None = None) -> list[list[dict]]:
        """`POST /v1/classify/{task}`: Hugging Face text-classification, one `[{label, score}, ...]` per input,
        best first (the first `top_k` labels; all when None)."""
        with self._observe("classify"), self._admit():
            request = _validate(ClassifyRequest, inputs=inputs, parameters={"top_k": top_k})
            texts = [request.inputs] if isinstance(request.inputs, str) else request.inputs
            texts, clipped = self._check_texts(texts, field="inputs")
            tasks = self._check_tasks([task])
            results = await self._within_deadline(lambda: self._predict(texts, clipped, tasks, False))
            return [ranked(result[task]["scores"], request.parameters.top_k) for result in results]

    def tasks(self) -> dict:
        """`GET /v1/tasks`: every task with its labels, evaluation metrics and calibration."""
        manifest = self.manifest
        return {
            "tasks": [
                {
                    "name": spec.name,
                    "labels": list(spec.labels),
                    "metrics": manifest.metrics.get(spec.name, {}),
                    "calibration": manifest.calibration.get(spec.name, {}),
                }
                for spec in manifest.model.tasks
            ],
            "model": self.model_info,
        }

    async def health(self) -> dict:
        """`GET /healthz`: ping every deployment; raise `unavailable` (503) naming those that did not answer."""
        handles = [self.encoder, *self.heads.values()]
        answers = await asyncio.gather(
            *(asyncio.wait_for(_ping(handle), self.limits.health_timeout_s) for handle in handles),
            return_exceptions=True,
        )
        status = {
            handle.deployment_name: "ok" if answer == "ok" else repr(answer) for handle, answer in zip(handles, answers)
        }
        failing = [name for name, state in status.items() if state != "ok"]
        if failing:
            raise ServiceError(ErrorKind.unavailable, f"Deployments not answering: {', '.join(failing)}.")
        return {"status": "ok", "deployments": status}

    def count_http_error(self, kind: ErrorKind) -> None:
        """Errors of the HTTP layer (schema, body size, routing), which never reach the methods above. The
        endpoint tag is fixed ("http"), not the path, so that random URLs cannot grow the number of series."""
        self.metrics.errors.inc(tags={"error_type": kind.value})
        self.metrics.requests.inc(tags={"endpoint": "http", "status": kind.value})

    def check_health(self) -> None:
        """Nothing of its own can break; it does not ping the other deployments here, so that one slow encoder
        does not get every ingress replica restarted (GET /healthz reports them instead)."""

    # --- internals ---------------------------------------------------------------------------------------------
    async def _predict(
        self, texts: list[str], clipped: list[bool], tasks: list[str], return_embeddings: bool
    ) -> list[dict]:
        batch, outputs = await self._batcher.submit((texts, tasks))
        results: list[dict] = [{} for _ in texts]
        for task, per_text in zip(tasks, outputs):
            self.metrics.task_requests.inc(tags={"task": task})
            self.metrics.task_texts.inc(len(texts), tags={"task": task})
            for result, task_result in zip(results, per_text):
                result[task] = task_result
        for i, result in enumerate(results):
            if return_embeddings:
                result["embedding"] = batch.embeddings[i].tolist()
            result["truncated"] = clipped[i] or batch.truncated[i]
        return results

    async def _run_batch(
        self, requests: list[tuple[list[str], list[str]]]
    ) -> list[tuple[EncodedTexts, list[list[dict]]]]:
        """Requests (texts, tasks) -> per request its embeddings and one result list per asked task.

        One round trip to the encoder and one to each asked head per batch of requests, not per request: on 2
        cores every Serve call costs about as much CPU as encoding a short text. Each text is encoded once,
        whatever the number of heads; the embeddings come back here (for `truncated` and `return_embeddings`) and
        go to the heads by value, in parallel (handing the heads the un-awaited response instead routes them
        through the object store: measured 1.5-3x slower on the 2-core machine)."""
        texts = [text for request_texts, _ in requests for text in request_texts]
        starts = np.cumsum([0] + [len(request_texts) for request_texts, _ in requests])
        encoded: EncodedTexts = await self.encoder.encode.remote(texts)
        rows = {  # task -> rows of `texts` whose request asked for it
            task: [i for r, (_, asked) in enumerate(requests) if task in asked for i in range(starts[r], starts[r + 1])]
            for task in self.heads
        }
        rows = {task: picked for task, picked in rows.items() if picked}
        calls = [
            self.heads[task].classify.remote(
                encoded
                if len(picked) == len(texts)
                else EncodedTexts(encoded.embeddings[picked], [], encoded.fingerprint)
            )
            for task, picked in rows.items()
        ]
        outputs = await asyncio.gather(*calls)
        by_row = {task: dict(zip(picked, out)) for (task, picked), out in zip(rows.items(), outputs)}
        answers = []
        for r, (_, asked) in enumerate(requests):
            span = range(starts[r], starts[r + 1])
            rows = slice(span.start, span.stop)
            mine = EncodedTexts(
                encoded.embeddings[rows], encoded.truncated[rows], token_counts=encoded.token_counts[rows]
            )
            answers.append((mine, [[by_row[task][i] for i in span] for task in asked]))
        return answers

    async def _within_deadline(self, call):
        """Await `call()` within `request_timeout_s` (503 timeout past it). A call whose replica died (killed,
        crashed) is retried once within the same deadline: Serve routes it to a live or replacement replica."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.request_timeout_s
        for attempt in range(2):
            try:
                return await asyncio.wait_for(call(), max(deadline - loop.time(), 0.001))
            except ServiceError:
                raise
            except Exception as exc:  # RayTaskError wraps the replica's exception and subclasses its type
                if attempt == 0 and replica_died(exc) and deadline - loop.time() > 0.1:
                    logger.warning(f"A replica died during a request ({type(exc).__name__}); retrying it once")
                    continue
                raise to_service_error(exc) from exc

    def _check_texts(self, texts: list[str], field: str = "texts") -> tuple[list[str], list[bool]]:
        """Refuse too many texts, empty ones and invalid Unicode; cut each text to `max_chars_per_text` characters.
        Returns the texts to encode and which of them were cut (their results say `truncated`)."""
        limits = self.limits
        if len(texts) > limits.max_texts_per_request:
            raise ServiceError(
                ErrorKind.too_many_texts,
                f"{len(texts)} texts in one request; the limit is {limits.max_texts_per_request}. Split the request.",
            )
        for i, text in enumerate(texts):
            if not _has_content(text):
                raise ServiceError(ErrorKind.empty_text, f"{field}[{i}] is empty; every text needs some content.")
            if _has_surrogate(text):
                raise ServiceError(
                    ErrorKind.validation_error,
                    f"{field}[{i}] holds a lone UTF-16 surrogate (e.g. \\ud800), which is not valid Unicode; "
                    "send valid UTF-8 (pairs of surrogate escapes are fine).",
                )
        clipped = [len(text) > limits.max_chars_per_text for text in texts]
        return [text[: limits.max_chars_per_text] for text in texts], clipped

    def _check_tasks(self, tasks: list[str] | None) -> list[str]:
        if tasks is None:
            return list(self.heads)
        unknown = [task for task in tasks if task not in self.heads]
        if unknown:
            raise ServiceError(ErrorKind.unknown_task, f"No task {unknown[0]!r}. Available: {list(self.heads)}")
        repeated = sorted({task for task in tasks if tasks.count(task) > 1})
        if repeated:
            raise ServiceError(ErrorKind.validation_error, f"tasks: {repeated} listed more than once; name each once.")
        return list(tasks)  # the asked order

    @contextmanager
    def _admit(self) -> Iterator[None]:
        """Shed load: past `max_inflight_requests` calls in this replica, answer 503 overloaded at once instead of
        queueing (the encoder's and heads' `max_queued_requests` bound the queues behind it)."""
        if self.inflight >= self.limits.max_inflight_requests:
            raise ServiceError(ErrorKind.overloaded, "The service is overloaded; retry after a short wait.")
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    @contextmanager
    def _observe(self, endpoint: str) -> Iterator[None]:
        start = time.perf_counter()
        status = "ok"
        try:
            yield
        except ServiceError as exc:
            status = exc.kind.value
            self.metrics.errors.inc(tags={"error_type": status})
            raise
        finally:
            self.metrics.requests.inc(tags={"endpoint": endpoint, "status": status})
            self.metrics.latency_ms.observe((time.perf_counter() - start) * 1000, tags={"endpoint": endpoint})


def read_auth_token(limits: Limits) -> bytes | None:
    """The bearer token the config names (environment variable or file), or None when auth is off. A token that is
    named but missing or empty is an error: failing the deploy beats serving without the auth that was asked for."""
    if limits.auth_token_env and limits.auth_token_file:
        raise ValueError("Ingress user_config: set auth_token_env or auth_token_file, not both.")
    if limits.auth_token_env:
        token = os.environ.get(limits.auth_token_env, "").strip()
        where = f"environment variable {limits.auth_token_env} (set it in the application's runtime_env.env_vars)"
    elif limits.auth_token_file:
        path = Path(limits.auth_token_file).expanduser()
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


def _unit_norm(embeddings: np.ndarray) -> np.ndarray:
    """(n, dim) -> each row scaled to unit L2 norm (an all-zero row stays zero)."""
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


async def _ping(handle: DeploymentHandle) -> str:
    return await handle.ping.remote()


def _validate(schema, /, **fields):
    """Validate handle callers' arguments with the HTTP request model: same rules, same error kinds."""
    try:
        return schema.model_validate(fields)
    except ValidationError as exc:
        raise ServiceError(*describe_errors(exc.errors())) from None
