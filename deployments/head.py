"""A task head deployment: one class, deployed once per task (TopicHead, SentimentHead, ...), each in its own Serve
application (`graph:build_head`), each autoscaled alone, each added, swapped or removed without touching the others.

A head loads only its own weights: a checkpoint's jointly trained head, or a head artifact of `multitask add-task`.
It starts once the encoder application answers with the fingerprint the head was trained against. While the
encoder application is still deploying (a rollout: old encoder replicas may answer first) it waits, up to
`encoder_wait_s`; once the encoder application runs and answers with another fingerprint, the head is refused at
once with EncoderMismatchError (the head application fails to deploy; `serve status` says why, and the running
tasks keep answering). Every call checks the fingerprint that came with the embeddings too, so a head never
classifies another encoder's embeddings (the ingress answers 503 encoder_mismatch).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle
from threadpoolctl import threadpool_limits

from deployments.busy_time import BUSY_METRIC, BusyClock
from deployments.encoded_texts import EncodedTexts
from deployments.metrics import HeadMetrics
from deployments.options import DEFAULT_OPTIONS
from deployments.settings import HeadSettings
from multitask.checkpoint.manifest import read_manifest
from multitask.errors import EncoderMismatchError
from multitask.head_artifact import is_head_artifact, load_head_artifact
from multitask.numpy_head import NumpyHead
from multitask.results import label_scores
from multitask.storage import locate_checkpoint
from multitask.task_names import head_deployment_name  # noqa: F401 - graph.py and tests import it from here

logger = logging.getLogger("ray.serve")

ENCODER_WAIT_S = 600.0
"""How long a head waits at start for the deploying encoder application to answer with its fingerprint (loading a
large model, or a rollout where old encoder replicas still answer, takes a while)."""
DEPLOYING_STATUSES = ("DEPLOYING", "NOT_STARTED")
"""An application's statuses while it is being deployed or updated (not failed, not done)."""
ENCODER_DEPLOYMENT = "Encoder"


@serve.deployment(name="Head", **DEFAULT_OPTIONS["Head"])
class HeadDeployment:
    async def __init__(
        self,
        task: str,
        head: str,
        encoder_app: str | None = None,
        checkpoint_cache_dir: str | None = None,
        encoder_wait_s: float = ENCODER_WAIT_S,
    ):
        source = locate_checkpoint(head, checkpoint_cache_dir)  # a URI: fetched once per node
        if is_head_artifact(source):
            loaded = load_head_artifact(source)
            manifest = loaded.manifest
            self.head, trained_with = loaded.head, loaded.fingerprint
            self.metrics_report, self.calibration = manifest.metrics, manifest.calibration
        else:
            manifest = read_manifest(source)
            self.head = NumpyHead.load(source, task, manifest=manifest)  # numpy: this process never imports torch
            trained_with = manifest.encoder.fingerprint
            self.metrics_report = manifest.metrics.get(task, {})
            self.calibration = manifest.calibration.get(task, {})
        if encoder_app is not None:  # the encoder that will feed us, live
            encoder = serve.get_deployment_handle(ENCODER_DEPLOYMENT, encoder_app, _check_exists=False)
            await _wait_for_encoder(encoder, encoder_app, trained_with, task, head, encoder_wait_s)
        self.task = task
        self.source = head
        self.labels = list(self.head.task.labels)
        self.fingerprint = trained_with
        self.settings = HeadSettings()
        self.metrics = HeadMetrics(task)
        self.calls = 0
        self.texts = 0
        self.busy = BusyClock()  # its autoscaling signal (deployments/busy_time.py)

    def reconfigure(self, user_config: dict) -> None:
        self.settings = HeadSettings.model_validate(user_config or {})
        if self.settings.threads:
            threadpool_limits(self.settings.threads, user_api="blas")

    async def classify(self, encoded: EncodedTexts) -> list[dict]:
        """Embeddings of n texts -> n results `{label, confidence, scores}`, in the same order."""
        if encoded.fingerprint != self.fingerprint:
            raise EncoderMismatchError(
                f"Head {self.task!r} was trained against encoder {self.fingerprint} but got embeddings from "
                f"encoder {encoded.fingerprint}."
            )
        with self.busy.busy():
            probs = self.head.probabilities(encoded.embeddings)  # (n, embedding_dim) -> (n, num_labels)
            results = [label_scores(self.labels, row) for row in probs.tolist()]
            self._record(results)
        return results

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve asks every replica for this; the heads' policy (`BusyTimePolicy`) scales on it."""
        return {BUSY_METRIC: self.busy.share()}

    def _record(self, results: list[dict]) -> None:
        self.calls += 1
        self.texts += len(results)
        self.metrics.requests.inc()
        self.metrics.texts.inc(len(results))
        for result in results:
            self.metrics.labels.inc(tags={"label": result["label"]})
            self.metrics.confidence.observe(result["confidence"])

    def stats(self) -> dict:
        """This replica's counters (tests use them to prove which heads a request reached)."""
        return {"task": self.task, "calls": self.calls, "texts": self.texts}

    def info(self) -> dict:
        """The task as `GET /v1/tasks` shows it: labels, evaluation metrics and calibration, where the head came
        from and the encoder it is bound to."""
        return {
            "name": self.task,
            "labels": self.labels,
            "metrics": self.metrics_report,
            "calibration": self.calibration,
            "head": self.source,
            "fingerprint": self.fingerprint,
        }

    def ping(self) -> str:
        return "ok"

    def check_health(self) -> None:
        """The head still runs and gives a probability distribution (Serve restarts the replica otherwise)."""
        probs = self.head.probabilities(np.zeros((1, self.head.in_features), np.float32))
        if not np.isfinite(probs).all() or abs(float(probs.sum()) - 1.0) > 1e-3:
            raise RuntimeError(f"Head {self.task!r} gives invalid probabilities: {probs.tolist()}")


async def _wait_for_encoder(
    encoder: DeploymentHandle, encoder_app: str, trained_with: str, task: str, head: str, wait_s: float
) -> None:
    """Return once the encoder application answers with the fingerprint the head was trained with; raise
    EncoderMismatchError once it runs another one (at once if the application is not deploying, else after
    `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while True:
        remaining = deadline - time.monotonic()
        info = await asyncio.wait_for(encoder.info.remote(), max(remaining, 1.0))
        if info["fingerprint"] == trained_with:
            return
        deploying = await asyncio.to_thread(_app_deploying, encoder_app)
        if remaining <= 0 or not deploying:
            raise EncoderMismatchError(
                f"Head {task!r} ({head}) was trained against encoder fingerprint {trained_with}, but the encoder "
                f"application {encoder_app!r} runs {info['encoder']!r} with fingerprint {info['fingerprint']}. "
                f"Train the head on the served checkpoint (`multitask add-task {task} --checkpoint ...`), or deploy "
                "the encoder and heads of the same checkpoint."
            )
        logger.warning(
            f"Head {task!r}: the deploying encoder answers fingerprint {info['fingerprint']}, want {trained_with}; "
            "waiting"
        )
        await asyncio.sleep(2.0)


def _app_deploying(app: str) -> bool:
    """The application is being deployed or updated (its old replicas may still answer)."""
    status = serve.status().applications.get(app)
    return status is not None and status.status in DEPLOYING_STATUSES
