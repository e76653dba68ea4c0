"""The graph of configs/serve_autoscaling.yaml (heads that scale 1-3 within seconds), on its own local Ray.

Its own Ray and Serve, as tests/reliability has, since the config differs from tests/graph's; 2 logical CPUs,
as on the laptop the config is made for (its maximum, Encoder 2 x 0.5 + Ingress 0.25 + 6 head replicas x 0.1, fits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from deployments.config_overlay import overlaid_config, write_overlaid
from tests.support.graph_under_test import APP_NAME, graph_under_test
from tests.support.paths import ROOT, SHIPPED_CHECKPOINT

OVERLAY = ROOT / "configs" / "serve_autoscaling.yaml"


@dataclass
class Autoscaled:
    url: str
    min_replicas: dict[str, int]

    def replicas(self) -> dict[str, int]:
        """RUNNING replicas per deployment, from Serve's status API."""
        from ray import serve

        deployments = serve.status().applications[APP_NAME].deployments
        return {name: status.replica_states.get("RUNNING", 0) for name, status in deployments.items()}


def answers_topic(url: str) -> bool:
    try:
        return requests.post(url + "/v1/predict/topic", json={"texts": ["ready?"]}, timeout=30).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="package")
def autoscaled(tmp_path_factory, shipped_onnx_cache: Path) -> Autoscaled:
    config = write_overlaid(OVERLAY, tmp_path_factory.mktemp("autoscaling") / "serve_autoscaling.yaml")
    (application,) = overlaid_config(OVERLAY)["applications"]
    minimum = {d["name"]: d["autoscaling_config"]["min_replicas"] for d in application["deployments"]}
    # 2 CPUs, as on the laptop the config is made for. Ready when HTTP reaches the graph; not through /healthz, whose
    # pings of every head would count as traffic to SentimentHead too (this config scales a head on any call in flight)
    with graph_under_test(
        config,
        num_cpus=2,
        ready=answers_topic,
        checkpoint=str(SHIPPED_CHECKPOINT),
        onnx_cache_dir=str(shipped_onnx_cache),
    ) as url:
        yield Autoscaled(url, minimum)
