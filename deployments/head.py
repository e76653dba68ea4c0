"""A task head deployment: one class, bound once per task (TopicHead, SentimentHead, ...), each autoscaled alone.

A head loads only its own weights from the checkpoint and refuses to start against an encoder whose fingerprint
differs from the one it was trained with (it asks the live encoder deployment). Every call checks the fingerprint
that came with the embeddings too, so a head never classifies another encoder's embeddings mid-rollout.
"""

from __future__ import annotations

import asyncio
import logging

import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.metrics import HeadMetrics
from deployments.schemas import EncodedTexts, HeadSettings
from multitask.checkpoint import load_head, read_manifest
from multitask.errors import EncoderMismatchError
from multitask.model import label_scores

logger = logging.getLogger("ray.serve")

ENCODER_INFO_TIMEOUT_S = 600.0
"""How long a head waits at start for the encoder deployment to answer (it may be loading a large model)."""


def head_deployment_name(task: str) -> str:
    """`topic` -> `TopicHead`, `news_region` -> `NewsRegionHead`: the deployment name in code and configs."""
    return "".join(part.capitalize() for part in task.split("_")) + "Head"


@serve.deployment(
    name="TaskHead",
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=64,
    autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 16},
    user_config=HeadSettings().model_dump(),
)
class TaskHeadDeployment:
    async def __init__(self, checkpoint: str, task: str, encoder: DeploymentHandle | None = None):
        if encoder is not None:  # the encoder that will feed us, live
            info = await asyncio.wait_for(encoder.info.remote(), ENCODER_INFO_TIMEOUT_S)
            encoder_fingerprint = info["fingerprint"]
        else:  # standalone use: trust the checkpoint's own encoder record
            encoder_fingerprint = read_manifest(checkpoint).encoder.fingerprint
        self.head = load_head(checkpoint, task, encoder_fingerprint)  # raises EncoderMismatchError
        self.task = task
        self.labels = list(self.head.task.labels)
        self.fingerprint = encoder_fingerprint
        self.settings = HeadSettings()
        self.metrics = HeadMetrics(task)
        self.calls = 0
        self.texts = 0

    def reconfigure(self, user_config: dict) -> None:
        self.settings = HeadSettings.model_validate(user_config or {})

    async def classify(self, encoded: EncodedTexts) -> list[dict]:
        """Embeddings of n texts -> n results `{label, confidence, scores}`, in the same order."""
        if encoded.fingerprint != self.fingerprint:
            raise EncoderMismatchError(
                f"Head {self.task!r} was trained against encoder {self.fingerprint} but got embeddings from "
                f"encoder {encoded.fingerprint}."
            )
        threads = self.settings.torch_threads
        if threads and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        embeddings = torch.tensor(encoded.embeddings, dtype=torch.float32)  # a copy: Ray's arrays are read-only
        with torch.inference_mode():
            probs = self.head.probabilities(embeddings)  # (n, num_labels)
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
        with torch.inference_mode():
            probs = self.head.probabilities(torch.zeros(1, self.head.net[0].in_features))
        if not torch.isfinite(probs).all() or abs(float(probs.sum()) - 1.0) > 1e-3:
            raise RuntimeError(f"Head {self.task!r} gives invalid probabilities: {probs.tolist()}")
