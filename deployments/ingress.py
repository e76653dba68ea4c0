"""The ingress deployment: validates, routes by task, merges results. HTTP and Python handles share its methods.

    handle = serve.get_app_handle("multitask")
    await handle.predict.remote(["a sentence"], tasks=["topic"])   # same dict as POST /v1/predict
    await handle.embed.remote(["a sentence"])                       # same dict as POST /v1/embed

Only the heads asked for are called, concurrently; each text goes through the encoder once, whatever the number
of heads, and its embedding is shared by all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.errors import ErrorKind, ServiceError, describe_errors, to_service_error
from deployments.http import create_app
from deployments.metrics import IngressMetrics
from deployments.schemas import EmbedRequest, EncodedTexts, Limits, PredictRequest
from multitask.checkpoint import manifest_summary, read_manifest

logger = logging.getLogger("ray.serve")


@serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.2},
    max_ongoing_requests=128,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 32},
    user_config=Limits().model_dump(),
)
@serve.ingress()
class Ingress:
    def __init__(self, checkpoint: str, encoder: DeploymentHandle, heads: dict[str, DeploymentHandle]):
        self.manifest = read_manifest(checkpoint)
        task_names = self.manifest.model.task_names
        if sorted(heads) != sorted(task_names):
            raise ValueError(f"Heads {sorted(heads)} do not match the checkpoint's tasks {task_names}.")
        self.encoder = encoder
        self.heads = {task: heads[task] for task in task_names}  # checkpoint order = default result order
        self.model_info = {**manifest_summary(self.manifest), "checkpoint": Path(checkpoint).name}
        self.limits = Limits()
        self.metrics = IngressMetrics()
        logger.info(
            f"multitask ready: POST /v1/predict, /v1/predict/{{task}}, /v1/embed; GET /v1/tasks, /healthz, "
            f"/openapi.json, /docs (tasks {task_names}, checkpoint {checkpoint}), on the Serve HTTP proxy's "
            "host:port (http_options in the config; 127.0.0.1:8000 in serve_config.local.yaml)."
        )

    def reconfigure(self, user_config: dict) -> None:
        self.limits = Limits.model_validate(user_config or {})

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self)

    # --- the API, for HTTP routes and handle callers alike ----------------------------------------------------
    async def predict(self, texts: list[str], tasks: list[str] | None = None, return_embeddings: bool = False) -> dict:
        """`POST /v1/predict`: one result per text, in order, with only the asked tasks."""
        with self._observe("predict"):
            request = _validate(PredictRequest, texts=texts, tasks=tasks, return_embeddings=return_embeddings)
            self._check_texts(request.texts)
            tasks = self._check_tasks(request.tasks)
            results = await self._within_deadline(self._predict(request.texts, tasks, request.return_embeddings))
            return {"results": results, "model": self.model_info}

    async def embed(self, texts: list[str], normalize: bool = True) -> dict:
        """`POST /v1/embed`: the shared embeddings, unit-normalized unless asked otherwise."""
        with self._observe("embed"):
            request = _validate(EmbedRequest, texts=texts, normalize=normalize)
            self._check_texts(request.texts)
            encoded: EncodedTexts = await self._within_deadline(self.encoder.encode.remote(request.texts))
            embeddings = encoded.embeddings  # (n, embedding_dim)
            if request.normalize:
                embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
            return {
                "embeddings": embeddings.tolist(),
                "dimension": int(embeddings.shape[1]),
                "truncated": encoded.truncated,
                "model": self.model_info,
            }

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
    async def _predict(self, texts: list[str], tasks: list[str], return_embeddings: bool) -> list[dict]:
        batch, outputs = await self._encode_and_classify((texts, tasks))
        results: list[dict] = [{} for _ in texts]
        for task, per_text in zip(tasks, outputs):
            self.metrics.task_requests.inc(tags={"task": task})
            self.metrics.task_texts.inc(len(texts), tags={"task": task})
            for result, task_result in zip(results, per_text):
                result[task] = task_result
        for i, result in enumerate(results):
            if return_embeddings:
                result["embedding"] = batch.embeddings[i].tolist()
            result["truncated"] = batch.truncated[i]
        return results

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0, max_concurrent_batches=2)
    async def _encode_and_classify(
        self, requests: list[tuple[list[str], list[str]]]
    ) -> list[tuple[EncodedTexts, list[list[dict]]]]:
        """Concurrent requests (texts, tasks) -> per request its embeddings and one result list per asked task.

        One round trip to the encoder and one to each asked head per gathered batch of requests, not per request:
        on 2 cores every Serve call costs about as much CPU as encoding a short text. Each text is encoded once,
        whatever the number of heads; the embeddings come back here (for `truncated` and `return_embeddings`) and
        go to the heads by value, in parallel (handing the heads the un-awaited response instead routes them
        through the object store: measured 1.5-3x slower on the 2-core machine). `batch_wait_timeout_s=0`: a
        batch takes what queued while the previous one ran, so a lone request waits for nothing."""
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
            mine = EncodedTexts(encoded.embeddings[span.start : span.stop], encoded.truncated[span.start : span.stop])
            answers.append((mine, [[by_row[task][i] for i in span] for task in asked]))
        return answers

    async def _within_deadline(self, awaitable):
        try:
            return await asyncio.wait_for(awaitable, self.limits.request_timeout_s)
        except ServiceError:
            raise
        except Exception as exc:  # RayTaskError wraps the replica's exception and subclasses its type
            raise to_service_error(exc) from exc

    def _check_texts(self, texts: list[str]) -> None:
        limits = self.limits
        if len(texts) > limits.max_texts_per_request:
            raise ServiceError(
                ErrorKind.too_many_texts,
                f"{len(texts)} texts in one request; the limit is {limits.max_texts_per_request}. Split the request.",
            )
        for i, text in enumerate(texts):
            if not text.strip():
                raise ServiceError(ErrorKind.empty_text, f"texts[{i}] is empty; every text needs some content.")
            if len(text) > limits.max_chars_per_text:
                raise ServiceError(
                    ErrorKind.text_too_long,
                    f"texts[{i}] has {len(text)} characters; the limit is {limits.max_chars_per_text}.",
                )

    def _check_tasks(self, tasks: list[str] | None) -> list[str]:
        if tasks is None:
            return list(self.heads)
        unknown = [task for task in tasks if task not in self.heads]
        if unknown:
            raise ServiceError(ErrorKind.unknown_task, f"No task {unknown[0]!r}. Available: {list(self.heads)}")
        return list(dict.fromkeys(tasks))  # asked order, duplicates dropped

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


async def _ping(handle: DeploymentHandle) -> str:
    return await handle.ping.remote()


def _validate(model, **fields):
    """Validate handle callers' arguments with the HTTP request model: same rules, same error kinds."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise ServiceError(*describe_errors(exc.errors())) from None
