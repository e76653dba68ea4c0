"""Every deployment's Serve options, stated once: the code's defaults, which the decorators carry.

They are the CPU-laptop profile, what `serve run graph:app` (or `graph:build_app checkpoint=...`) deploys, and
serve_config.local.yaml states exactly these values (tests/unit/test_serve_configs.py checks it). A config file
overrides them per deployment name; serve_config.yaml states every one of them with the cluster's values, since
Serve replaces `ray_actor_options`, `autoscaling_config` and `user_config` whole, not key by key.
"""

from __future__ import annotations

from typing import Any

from deployments.settings import EncoderSettings, HeadSettings, IngressSettings

MIB = 2**20
HEAD_POLICY = {"policy_function": "deployments.busy_time:BusyTimePolicy", "policy_kwargs": {"target_busy": 0.5}}
"""Heads scale on the share of time they are busy, not on requests in flight (deployments/busy_time.py)."""


def _options(
    *,
    num_cpus: float,
    memory_mib: int,
    max_ongoing_requests: int,
    max_queued_requests: int,
    max_replicas: int,
    target_ongoing_requests: int,
    min_replicas: int = 1,
    user_config: dict[str, Any],
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One deployment's options; what the three deployments share is written here once."""
    return {
        "max_ongoing_requests": max_ongoing_requests,
        "max_queued_requests": max_queued_requests,
        "autoscaling_config": {
            **({"policy": policy} if policy else {}),
            "min_replicas": min_replicas,
            "initial_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_ongoing_requests,
            "look_back_period_s": 30,
            "upscale_delay_s": 30,
            "downscale_delay_s": 600,
            "upscaling_factor": 1.0,
            "downscaling_factor": 1.0,
            "aggregation_function": "mean",
        },
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": 0, "memory": memory_mib * MIB, "resources": {}},
        "user_config": user_config,
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "graceful_shutdown_wait_loop_s": 2,
        "graceful_shutdown_timeout_s": 10,
    }


DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    # 0.25 + 2 x 0.5 + 2 x 0.1 = 1.45 CPUs: every replica fits on 2 cores, with room for 5 more heads
    "Ingress": _options(
        num_cpus=0.25,
        memory_mib=512,
        max_ongoing_requests=128,
        max_queued_requests=512,
        max_replicas=1,
        target_ongoing_requests=32,
        user_config=IngressSettings().model_dump(),
    ),
    # one single-threaded replica per core, each running passes of at most 4 texts: on 2 cores that serves 1.8x
    # (1 text per request) to 2.3x (8 texts) the texts/s of one 2-thread replica with passes of 32 (README,
    # Performance: a second intra-op thread costs 1.6x the CPU per text, and longer passes pad more)
    "Encoder": _options(
        num_cpus=0.5,
        memory_mib=2048,
        max_ongoing_requests=64,
        max_queued_requests=256,
        min_replicas=2,
        max_replicas=2,
        target_ongoing_requests=32,
        # Ray sets OMP_NUM_THREADS=1 in replicas: the encoder's threads come from here
        user_config=EncoderSettings(threads=1, max_batch_size=4, max_batch_tokens=512).model_dump(),
    ),
    # every head deployment (TopicHead, SentimentHead, ...): one class bound once per task; a head call takes about a
    # millisecond, so a tenth of a core each
    "Head": _options(
        num_cpus=0.1,
        memory_mib=512,
        max_ongoing_requests=64,
        max_queued_requests=256,
        max_replicas=2,
        target_ongoing_requests=16,
        user_config=HeadSettings().model_dump(),
        policy=HEAD_POLICY,
    ),
}
