"""A task head deployment: one class, bound once per task (TopicHead, SentimentHead, ...), each autoscaled alone.

A head loads only its own weights from the checkpoint and starts only once the live encoder deployment answers
with the fingerprint the checkpoint names (during a rollout old encoder replicas may answer first; after
`ENCODER_WAIT_S` it gives up with EncoderMismatchError). Every call checks the fingerprint that came with the
embeddings too, so a head never classifies another encoder's embeddings (the ingress answers 503 encoder_mismatch).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle
from threadpoolctl import threadpool_limits

from deployments.encoded_texts import EncodedTexts
from deployments.metrics import HeadMetrics
from deployments.options import DEFAULT_OPTIONS
from deployments.settings import HeadSettings
from multitask.checkpoint.manifest import read_manifest
from multitask.errors import EncoderMismatchError
from multitask.numpy_head import NumpyHead
from multitask.results import label_scores
from multitask.storage import locate_checkpoint

logger = logging.getLogger("ray.serve")

ENCODER_WAIT_S = 600.0
"""How long a head waits at start for an encoder replica with its fingerprint (loading a large model, or a rollout
where old encoder replicas still answer, takes a while)."""


def head_deployment_name(task: str) -> str:
    """`topic` -> `TopicHead`, `news_region` -> `NewsRegionHead`: the deployment name in code and configs."""
    return "".join(part.capitalize() for part in task.split("_")) + "Head"


@serve.deployment(name="TaskHead", **DEFAULT_OPTIONS["TaskHead"])
class TaskHeadDeployment:
    async def __init__(
        self,
        checkpoint: str,
        task: str,
        encoder: DeploymentHandle | None = None,
        checkpoint_cache_dir: str | None = None,
    ):
        checkpoint = locate_checkpoint(checkpoint, checkpoint_cache_dir)  # a URI: fetched once per node
        trained_with = read_manifest(checkpoint).encoder.fingerprint
        self.head = NumpyHead.load(checkpoint, task)  # numpy: this process never imports torch
        if encoder is not None:  # the encoder that will feed us, live
            await _wait_for_encoder(encoder, trained_with, task)
        self.task = task
        self.labels = list(self.head.task.labels)
        self.fingerprint = trained_with
        self.settings = HeadSettings()
        self.metrics = HeadMetrics(task)
        self.calls = 0
        self.texts = 0

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
        probs = self.head.probabilities(encoded.embeddings)  # (n, embedding_dim) -> (n, num_labels)
        results = [label_scores(self.labels, row) for row in probs.tolist()]
        self._record(results)
        return results

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

    def ping(self) -> str:
        return "ok"

    def check_health(self) -> None:
        """The head still runs and gives a probability distribution (Serve restarts the replica otherwise)."""
        probs = self.head.probabilities(np.zeros((1, self.head.in_features), np.float32))
        if not np.isfinite(probs).all() or abs(float(probs.sum()) - 1.0) > 1e-3:
            raise RuntimeError(f"Head {self.task!r} gives invalid probabilities: {probs.tolist()}")


async def _wait_for_encoder(encoder: DeploymentHandle, trained_with: str, task: str) -> None:
    """Return once the encoder deployment answers with the fingerprint the head was trained with; raise
    EncoderMismatchError if it still answers with another one after ENCODER_WAIT_S."""
    deadline = time.monotonic() + ENCODER_WAIT_S
    while True:
        remaining = deadline - time.monotonic()
        info = await asyncio.wait_for(encoder.info.remote(), max(remaining, 1.0))
        if info["fingerprint"] == trained_with:
            return
        if remaining <= 0:
            raise EncoderMismatchError(
                f"Head {task!r} was trained against encoder fingerprint {trained_with}, but the Encoder deployment "
                f"runs {info['encoder']!r} with fingerprint {info['fingerprint']}. Deploy the encoder and heads of "
                "the same checkpoint."
            )
        logger.warning(
            f"Head {task!r}: encoder answers fingerprint {info['fingerprint']}, want {trained_with}; waiting"
        )
        await asyncio.sleep(2.0)
