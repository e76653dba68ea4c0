"""Serve custom metrics (exported to Prometheus with Serve's own tags: application, deployment, replica).

Names carry the `multitask_` prefix. Each deployment builds the metrics it records, in its `__init__`.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Histogram

CONFIDENCE_BUCKETS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


class IngressMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "multitask_requests", "HTTP and handle requests, by route and status.", tag_keys=("endpoint", "status")
        )
        self.task_requests = Counter("multitask_task_requests", "Requests that asked for a task.", tag_keys=("task",))
        self.task_texts = Counter("multitask_task_texts", "Texts classified, per task.", tag_keys=("task",))
        self.errors = Counter("multitask_errors", "Error responses by kind.", tag_keys=("error_type",))
        self.key_requests = Counter(
            "multitask_key_requests", "HTTP requests per API key name, by status.", tag_keys=("key", "status")
        )
        self.key_texts = Counter("multitask_key_texts", "Texts admitted per API key name.", tag_keys=("key",))
        self.latency_ms = Histogram(
            "multitask_request_latency_ms", "End-to-end latency in the ingress.", LATENCY_BUCKETS_MS, ("endpoint",)
        )


class EncoderMetrics:
    def __init__(self) -> None:
        self.batch_size = Histogram(
            "multitask_encoder_batch_size", "Texts per encoder forward pass (dynamic batching).", BATCH_SIZE_BUCKETS
        )
        self.batch_latency_ms = Histogram(
            "multitask_encoder_batch_latency_ms", "Wall time of one encoder forward pass.", LATENCY_BUCKETS_MS
        )
        self.texts = Counter("multitask_encoder_texts", "Texts encoded.")
        self.tokens = Counter(
            "multitask_encoder_tokens", "Tokens the encoder read (after truncation, special tokens included)."
        )
        self.truncated = Counter("multitask_encoder_truncated_texts", "Texts cut to the encoder's max tokens.")


class HeadMetrics:
    def __init__(self, task: str) -> None:
        self.requests = Counter("multitask_head_requests", "Calls to this head.", tag_keys=("task",))
        self.texts = Counter("multitask_head_texts", "Texts classified by this head.", tag_keys=("task",))
        self.labels = Counter("multitask_predicted_labels", "Predicted labels.", tag_keys=("task", "label"))
        self.confidence = Histogram(
            "multitask_confidence", "Confidence of the predicted label.", CONFIDENCE_BUCKETS, ("task",)
        )
        for metric in (self.requests, self.texts, self.labels, self.confidence):
            metric.set_default_tags({"task": task})
