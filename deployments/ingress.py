"""The ingress deployment: validates, routes by task, merges results. HTTP and Python handles share its methods.

    handle = serve.get_app_handle("multitask")
    await handle.predict.remote(["a sentence"], tasks=["topic"])   # same dict as POST /v1/predict
    await handle.embed.remote(["a sentence"])                       # same dict as POST /v1/embed
    await handle.openai_embeddings.remote("a sentence")             # same dict as POST /v1/embeddings (OpenAI)
    await handle.classify.remote("topic", "a sentence")             # same list as POST /v1/classify/topic (HF)

Only the heads asked for are called, concurrently; each text goes through the encoder once, whatever the number
of heads, and its embedding is shared by all of them. The Encoder and each head are applications of their own
(graph.py); the Ingress finds the heads through its `user_config` (`tasks:`, `deployments/task_routes.py`), so
tasks come and go without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.batcher import ContinuousBatcher
from deployments.encoded_texts import EncodedTexts
from deployments.errors import ErrorKind, ServiceError, replica_died, to_service_error
from deployments.hf_compat import ClassifyRequest, ranked
from deployments.http import create_app
from deployments.metrics import IngressMetrics
from deployments.openai_compat import OpenAIEmbeddingsRequest, check_dimensions, embeddings_response
from deployments.options import DEFAULT_OPTIONS
from deployments.schemas import EmbedRequest, PredictRequest, parse_request
from deployments.settings import HttpPolicy, IngressSettings
from deployments.task_routes import TaskRoutes
from multitask.task_names import head_deployment_name

logger = logging.getLogger("ray.serve")

BATCH_MAX_TEXTS = 64
"""Texts per gathered batch of requests (a larger request goes alone)."""
BATCHES_IN_FLIGHT = 2
HEAD_PROBE_S = 0.5
"""How often a starting head is pinged (a new task answers within this of its head being up)."""
MODEL_REFRESH_S = 10.0
"""How often the encoder's identity (the `model` block of answers) is read again (an encoder rollout changes it)."""


@serve.deployment(name="Ingress", **DEFAULT_OPTIONS["Ingress"])
@serve.ingress()
class Ingress:
    http_policy: HttpPolicy  # what the HTTP layer enforces (deployments/http.py's IngressApi)

    async def __init__(self, encoder_app: str):
        self.encoder = _deployment("Encoder", encoder_app)
        self.routes = TaskRoutes(lambda task, app: _deployment(head_deployment_name(task), app))
        self.model_info = (await self.encoder.info.remote())["model"]  # waits for the encoder application
        self.settings = IngressSettings()
        self.http_policy = self.settings.http_policy()
        self.inflight = 0  # predict/embed calls this replica works on now (shed past max_inflight_requests)
        self.metrics = IngressMetrics()
        # concurrent predict requests share one encoder call and one call per head (`_run_batch`); two batches in
        # flight, so the encoder works on one while the heads answer the other
        self._batcher = ContinuousBatcher(
            self._run_batch, BATCH_MAX_TEXTS, max_in_flight=BATCHES_IN_FLIGHT, size=lambda request: len(request[0])
        )
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        logger.info(
            f"multitask ready: POST /v1/predict, /v1/predict/{{task}}, /v1/embed, /v1/embeddings (OpenAI), "
            f"/v1/classify/{{task}} (Hugging Face); GET / (a page to try it), /v1/tasks, /healthz, /openapi.json, "
            f"/docs (encoder application {encoder_app!r}, {self.model_info}), on http_options' host:port "
            "(127.0.0.1:8000 in serve_config.local.yaml; HAProxy there with serve.env, else Serve's proxy)."
        )

    async def reconfigure(self, user_config: dict) -> None:
        settings = IngressSettings.model_validate(user_config or {})
        # raises (the deploy fails) if a named token or key file is not there; unchanged keys keep their buckets
        self.http_policy = settings.http_policy(previous=self.http_policy)
        self.settings = settings
        self.routes.configure(settings.tasks)
        # wait for the heads of tasks added: on a first start the application is then ready only once its heads
        # answer; on a running replica requests go on meanwhile (a task not answering yet gets 503 unavailable)
        deadline = asyncio.get_running_loop().time() + settings.task_start_wait_s
        while self.routes.starting and asyncio.get_running_loop().time() < deadline:
            await self.routes.probe(timeout_s=2.0)
            if self.routes.starting:
                await asyncio.sleep(HEAD_PROBE_S)
        if self.routes.starting:
            logger.warning(
                f"Tasks {self.routes.starting} still starting after {settings.task_start_wait_s:.0f} s: their heads "
                "do not answer (`serve status` says why); they answer 503 unavailable until they do"
            )
        keys = self.http_policy.keys
        auth = f"on, keys {keys.names}" if keys else "off"
        logged = settings.model_dump(exclude={"api_keys"})  # names only: never a key or its digest in the log
        logger.info(f"Ingress settings: {logged}; API-key auth {auth}")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self)

    # --- the API, for HTTP routes and handle callers alike ----------------------------------------------------
    async def predict(self, texts: list[str], tasks: list[str] | None = None, return_embeddings: bool = False) -> dict:
        """`POST /v1/predict`: one result per text, in order, with only the asked tasks."""
        with self._observe("predict"), self._admit():
            request = parse_request(
                PredictRequest, self.settings, texts=texts, tasks=tasks, return_embeddings=return_embeddings
            )
            tasks = self.routes.check(request.tasks)
            checked = request.checked
            results = await self._within_deadline(
                lambda: self._predict(checked.texts, checked.clipped, tasks, request.return_embeddings)
            )
            return {"results": results, "model": self.model_info}

    async def embed(self, texts: list[str], normalize: bool = True) -> dict:
        """`POST /v1/embed`: the shared embeddings, unit-normalized unless asked otherwise."""
        with self._observe("embed"), self._admit():
            request = parse_request(EmbedRequest, self.settings, texts=texts, normalize=normalize)
            checked = request.checked
            encoded: EncodedTexts = await self._within_deadline(lambda: self.encoder.encode.remote(checked.texts))
            embeddings = _unit_norm(encoded.embeddings) if request.normalize else encoded.embeddings  # (n, dim)
            return {
                "embeddings": embeddings.tolist(),
                "dimension": int(embeddings.shape[1]),
                "truncated": [cut or flag for cut, flag in zip(checked.clipped, encoded.truncated)],
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
            request = parse_request(
                OpenAIEmbeddingsRequest,
                self.settings,
                input=input,
                model=model,
                encoding_format=encoding_format,
                dimensions=dimensions,
                user=user,
            )
            check_dimensions(request.dimensions, self.model_info["embedding_dim"])
            texts = request.checked.texts
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
            request = parse_request(ClassifyRequest, self.settings, inputs=inputs, parameters={"top_k": top_k})
            tasks = self.routes.check([task])
            checked = request.checked
            results = await self._within_deadline(lambda: self._predict(checked.texts, checked.clipped, tasks, False))
            return [ranked(result[task]["scores"], request.parameters.top_k) for result in results]

    async def tasks(self) -> dict:
        """`GET /v1/tasks`: every ready task with its labels, evaluation metrics and calibration (asked of its head,
        so a swapped head shows its own), and the tasks still `starting`."""
        ready = self.routes.ready
        try:
            infos = await asyncio.gather(*(self.routes.handle(task).info.remote() for task in ready))
        except Exception as exc:
            raise to_service_error(exc) from exc
        fields = ("name", "labels", "metrics", "calibration")
        return {
            "tasks": [{key: info[key] for key in fields} for info in infos],
            "starting": self.routes.starting,
            "model": self.model_info,
        }

    async def health(self) -> dict:
        """`GET /healthz`: ping the encoder and every ready head; raise `unavailable` (503) naming those that did not
        answer. Heads still starting are listed as such (their tasks answer 503 alone; the others are healthy)."""
        handles = [self.encoder, *(self.routes.handle(task) for task in self.routes.ready)]
        answers = await asyncio.gather(
            *(asyncio.wait_for(_ping(handle), self.settings.health_timeout_s) for handle in handles),
            return_exceptions=True,
        )
        status = {
            handle.deployment_name: "ok" if answer == "ok" else repr(answer) for handle, answer in zip(handles, answers)
        }
        failing = [name for name, state in status.items() if state != "ok"]
        if failing:
            raise ServiceError(ErrorKind.unavailable, f"Deployments not answering: {', '.join(failing)}.")
        starting = {head_deployment_name(task): "starting" for task in self.routes.starting}
        return {"status": "ok", "deployments": {**status, **starting}}

    def count_key_request(self, key: str, status: int, texts: int) -> None:
        """Per API key (its name, never the key): requests by HTTP status, and texts admitted."""
        self.metrics.key_requests.inc(tags={"key": key, "status": str(status)})
        if texts:
            self.metrics.key_texts.inc(texts, tags={"key": key})

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
        asked_tasks = dict.fromkeys(task for _, asked in requests for task in asked)
        rows = {  # task -> rows of `texts` whose request asked for it
            task: [i for r, (_, asked) in enumerate(requests) if task in asked for i in range(starts[r], starts[r + 1])]
            for task in asked_tasks
        }
        calls = [
            self.routes.handle(task).classify.remote(
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
        deadline = loop.time() + self.settings.request_timeout_s
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

    async def _watch(self) -> None:
        """For the replica's life: ping the starting heads every HEAD_PROBE_S (a task is served once its head
        answers), and read the encoder's identity again every MODEL_REFRESH_S."""
        loop = asyncio.get_running_loop()
        refreshed = loop.time()
        while True:
            try:
                await self.routes.probe(timeout_s=2.0)
                if loop.time() - refreshed > MODEL_REFRESH_S:
                    self.model_info = (await asyncio.wait_for(self.encoder.info.remote(), 5.0))["model"]
                    refreshed = loop.time()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any failure; the next round retries
                logger.warning(f"Ingress watcher: {type(exc).__name__}: {exc}")
            await asyncio.sleep(HEAD_PROBE_S)

    @contextmanager
    def _admit(self) -> Iterator[None]:
        """Shed load: past `max_inflight_requests` calls in this replica, answer 503 overloaded at once instead of
        queueing (the encoder's and heads' `max_queued_requests` bound the queues behind it)."""
        if self.inflight >= self.settings.max_inflight_requests:
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


def _unit_norm(embeddings: np.ndarray) -> np.ndarray:
    """(n, dim) -> each row scaled to unit L2 norm (an all-zero row stays zero)."""
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


async def _ping(handle: DeploymentHandle) -> str:
    return await handle.ping.remote()


def _deployment(name: str, app: str) -> DeploymentHandle:
    """A handle to another application's deployment, resolved on first use (applications deploy concurrently: it may
    not exist yet; `_check_exists=False` also keeps the constructor from a blocking controller call)."""
    return serve.get_deployment_handle(name, app, _check_exists=False)
